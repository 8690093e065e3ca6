"""Register the ``autoround`` method with SGLang (entry point group ``sglang.srt.plugins``).

SGLang 0.5.23 has no registration function for quantization methods: its registry is the
module-level dict ``sglang.srt.layers.quantization.QUANTIZATION_METHODS`` (plus
``BASE_QUANTIZATION_METHODS`` and, for AMX CPUs, ``CPU_QUANTIZATION_METHODS``), and its
documented extension point is a general plugin, a function SGLang calls in every process
(``sglang.srt.plugins.load_plugins``). :func:`register` is that function: it puts our config
first in those dicts (``ModelConfig`` asks each method's ``override_quantization_method`` in
dict order, so ours is asked before the built-in ``auto-round`` entry) and lets SGLang's
linear layers use the v2 weight loaders with our method.
"""

from __future__ import annotations

import logging
from typing import Any

from autoround_vllm.selection import METHOD_NAME

logger = logging.getLogger(__name__)

#: SGLang versions whose source this plugin was written against: [low, high).
SUPPORTED_SGLANG = ("0.5.23", "0.6.0")
_registered: dict[str, type] = {}


def put_first(registry: dict[str, Any], name: str, value: Any) -> None:
    """Make ``name -> value`` the first entry of ``registry``, in place."""
    rest = {k: v for k, v in registry.items() if k != name}
    registry.clear()
    registry[name] = value
    registry.update(rest)


def register() -> type:
    """Register the ``autoround`` method with SGLang (idempotent); returns the config class."""
    if METHOD_NAME in _registered:
        return _registered[METHOD_NAME]
    import sglang
    from sglang.srt.layers import linear, quantization

    from autoround_vllm.sglang_method import AutoRoundSglangConfig, AutoRoundSglangLinearMethod
    from autoround_vllm.vllm_plugin import version_warning

    warning = version_warning(sglang.__version__, SUPPORTED_SGLANG, "SGLang")
    if warning:
        logger.warning(warning)
    put_first(quantization.QUANTIZATION_METHODS, METHOD_NAME, AutoRoundSglangConfig)
    put_first(quantization.BASE_QUANTIZATION_METHODS, METHOD_NAME, AutoRoundSglangConfig)
    quantization.CPU_QUANTIZATION_METHODS[METHOD_NAME] = AutoRoundSglangConfig
    if AutoRoundSglangLinearMethod.__name__ not in linear.WEIGHT_LOADER_V2_SUPPORTED:
        linear.WEIGHT_LOADER_V2_SUPPORTED.append(AutoRoundSglangLinearMethod.__name__)
    _registered[METHOD_NAME] = AutoRoundSglangConfig
    return AutoRoundSglangConfig
