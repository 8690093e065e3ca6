"""autoround: low-bit weight quantization of LLMs (SignRound and RTN), exported in the
formats the ecosystem serves.

>>> from autoround import quantize, save
>>> qm = quantize(model, "W4A16")          # doctest: +SKIP
>>> save(qm, "out/model-w4a16")            # doctest: +SKIP
"""

from autoround._version import __version__
from autoround.api import quantize, save
from autoround.auto_scheme import AutoScheme
from autoround.backends import BACKENDS
from autoround.intel_api import AutoRound
from autoround.layer_quant import LayerQuant, group_width, quantize_weight
from autoround.loading import load_quantized
from autoround.nn.quant_linear import QuantLinear
from autoround.quantized_model import QuantizedModel
from autoround.schemes import PRESETS, Scheme, parse_scheme

__all__ = [
    "BACKENDS",
    "PRESETS",
    "AutoRound",
    "AutoScheme",
    "LayerQuant",
    "QuantLinear",
    "QuantizedModel",
    "Scheme",
    "__version__",
    "group_width",
    "load_quantized",
    "parse_scheme",
    "quantize",
    "quantize_weight",
    "save",
]
