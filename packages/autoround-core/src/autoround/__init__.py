"""autoround: low-bit weight quantization of LLMs (SignRound and RTN), exported in the
formats the ecosystem serves.

>>> from autoround import quantize, save
>>> qm = quantize(model, "W4A16")          # doctest: +SKIP
>>> save(qm, "out/model-w4a16")            # doctest: +SKIP

The names below are imported on first use (PEP 562), so that ``import autoround`` and the
paths that need none of them (model-free RTN, ``autoround list``, ``--help``) do not import
transformers and the rest of the model-based stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autoround._version import __version__

if TYPE_CHECKING:
    from autoround.api import quantize, save
    from autoround.auto_scheme import AutoScheme
    from autoround.backends import BACKENDS
    from autoround.intel_api import AutoRound
    from autoround.layer_quant import LayerQuant, group_width, quantize_weight
    from autoround.loading import load_quantized
    from autoround.nn.quant_linear import QuantLinear
    from autoround.quantized_model import QuantizedModel
    from autoround.schemes import PRESETS, Scheme, parse_scheme

#: Public name -> the module that defines it (the one place these are listed besides the
#: ``TYPE_CHECKING`` imports above, which mypy reads).
_EXPORTS = {
    "quantize": "autoround.api",
    "save": "autoround.api",
    "AutoScheme": "autoround.auto_scheme",
    "BACKENDS": "autoround.backends",
    "AutoRound": "autoround.intel_api",
    "LayerQuant": "autoround.layer_quant",
    "group_width": "autoround.layer_quant",
    "quantize_weight": "autoround.layer_quant",
    "load_quantized": "autoround.loading",
    "QuantLinear": "autoround.nn.quant_linear",
    "QuantizedModel": "autoround.quantized_model",
    "PRESETS": "autoround.schemes",
    "Scheme": "autoround.schemes",
    "parse_scheme": "autoround.schemes",
}

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


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name in this module."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autoround' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
