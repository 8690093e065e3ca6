"""autoround: low-bit weight quantization of LLMs (RTN now; SignRound next), exported in the
formats the ecosystem serves.

>>> from autoround import quantize, save
>>> qm = quantize(model, "W4A16")          # doctest: +SKIP
>>> save(qm, "out/model-w4a16")            # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("autoround-core")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from autoround.api import AutoRound, quantize, save
from autoround.quantized_model import QuantizedModel
from autoround.schemes import PRESETS, Scheme, parse_scheme

__all__ = [
    "PRESETS",
    "AutoRound",
    "QuantizedModel",
    "Scheme",
    "__version__",
    "parse_scheme",
    "quantize",
    "save",
]
