"""The vLLM quantization method ``autoround``: our kernels behind vLLM's public plugin API.

vLLM calls :func:`register` in every process at start-up (entry point group
``vllm.general_plugins``, declared in this package's ``pyproject.toml``). It imports
:mod:`autoround_vllm.vllm_method`, whose ``AutoRoundVllmConfig`` is registered with
``register_quantization_config("autoround")`` (the classes live at module level: vLLM pickles
the config into its engine process). Checkpoints keep
``quant_method: auto-round``; :meth:`AutoRoundVllmConfig.override_quantization_method` takes them
where stock vLLM cannot serve them (see :mod:`autoround_vllm.selection`), and
``quantization="autoround"`` always picks ours.
"""

from __future__ import annotations

import logging

from autoround_vllm.selection import METHOD_NAME

logger = logging.getLogger(__name__)

#: vLLM versions this plugin is built and tested against: [low, high).
SUPPORTED_VLLM = ("0.32.0", "0.33.0")
_registered: dict[str, type] = {}


def version_warning(
    version: str, supported: tuple[str, str] = SUPPORTED_VLLM, engine: str = "vLLM"
) -> str | None:
    """The warning for an engine version outside ``supported`` = [low, high), or None inside it."""
    from packaging.version import InvalidVersion, Version

    low, high = supported
    try:
        inside = Version(low) <= Version(Version(version).base_version) < Version(high)
    except InvalidVersion:
        inside = False
    if inside:
        return None
    return (
        f"autoround-vllm supports {engine} >={low},<{high}; the installed {engine} is {version}. "
        "The 'autoround' method is registered anyway: loading or serving may fail."
    )


def register() -> type:
    """Register the ``autoround`` method with vLLM (idempotent); returns the config class."""
    if METHOD_NAME in _registered:
        return _registered[METHOD_NAME]
    import vllm

    warning = version_warning(vllm.__version__)
    if warning:
        logger.warning(warning)
    from autoround_vllm.vllm_method import AutoRoundVllmConfig  # registers on import

    _registered[METHOD_NAME] = AutoRoundVllmConfig
    return AutoRoundVllmConfig
