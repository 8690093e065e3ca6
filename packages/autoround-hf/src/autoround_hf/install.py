"""The one override ``autoround_hf`` makes in transformers: the ``auto-round`` registry entries.

transformers ships ``auto-round`` pointing at Intel's package (``AUTO_QUANTIZER_MAPPING`` and
``AUTO_QUANTIZATION_CONFIG_MAPPING`` in ``transformers/quantizers/auto.py``), and its public
``register_quantizer`` / ``register_quantization_config`` refuse a name that exists. So
:func:`install` replaces those two dict entries directly (nothing else), remembering the
originals; :func:`uninstall` puts them back. Both are idempotent.
"""

from __future__ import annotations

from typing import Any

from transformers.quantizers import auto as _auto

from autoround_hf.config import AutoRoundConfig
from autoround_hf.quantizer import AutoRoundHfQuantizer

METHOD = "auto-round"
_saved: dict[str, Any] = {}


def _maps() -> tuple[dict[str, Any], dict[str, Any]]:
    return _auto.AUTO_QUANTIZER_MAPPING, _auto.AUTO_QUANTIZATION_CONFIG_MAPPING


def install() -> None:
    """Make ``quant_method: auto-round`` load through autoround (idempotent)."""
    quantizers, configs = _maps()
    if not installed():
        _saved["quantizer"] = quantizers.get(METHOD)
        _saved["config"] = configs.get(METHOD)
    quantizers[METHOD] = AutoRoundHfQuantizer
    configs[METHOD] = AutoRoundConfig


def uninstall() -> None:
    """Restore the entries :func:`install` replaced (idempotent; a no-op if never installed)."""
    if not _saved:
        return
    quantizers, configs = _maps()
    for mapping, key in ((quantizers, "quantizer"), (configs, "config")):
        original = _saved.pop(key)
        if original is None:
            mapping.pop(METHOD, None)
        else:
            mapping[METHOD] = original


def installed() -> bool:
    """Whether both entries are ours."""
    quantizers, configs = _maps()
    return quantizers.get(METHOD) is AutoRoundHfQuantizer and configs.get(METHOD) is AutoRoundConfig
