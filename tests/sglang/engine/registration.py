"""Run in the SGLang venv: our method is found by name and by checkpoint through SGLang itself.

Usage: ``registration.py CHECKPOINT... RESULT_JSON``. SGLang's own plugin loader
(``sglang.srt.plugins.load_plugins``, what each SGLang process runs) calls our entry point; then
SGLang's registry and its ``ModelConfig`` (which picks a checkpoint's method) are asked. Each
failed check raises; the JSON records what was seen.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

W4 = {
    "quant_method": "auto-round",
    "packing_format": "auto_round:auto_gptq",
    "bits": 4,
    "group_size": 128,
    "sym": True,
    "data_type": "int",
    "block_name_to_quantize": "model.layers",
}


def registry_checks() -> dict[str, Any]:
    import sglang.srt.plugins
    from sglang.srt.layers import linear, quantization

    sglang.srt.plugins.load_plugins()
    cls = quantization.get_quantization_config("autoround")
    assert cls.__name__ == "AutoRoundSglangConfig", cls
    for registry in ("QUANTIZATION_METHODS", "BASE_QUANTIZATION_METHODS"):
        assert next(iter(getattr(quantization, registry))) == "autoround", registry
    assert quantization.CPU_QUANTIZATION_METHODS["autoround"] is cls
    assert "AutoRoundSglangLinearMethod" in linear.WEIGHT_LOADER_V2_SUPPORTED
    assert "AutoRoundSglangFloatLinearMethod" in linear.WEIGHT_LOADER_V2_SUPPORTED  # per-part scales
    assert cls.override_quantization_method(W4, None) == "autoround"  # CPU: always ours
    assert cls.override_quantization_method(W4, "autoround") == "autoround"
    assert cls.override_quantization_method(W4, "auto-round") is None  # the user's choice wins
    assert cls.override_quantization_method({"quant_method": "gptq"}, None) is None
    assert cls.from_config(W4).get_name() == "autoround"
    try:
        cls.from_config({**W4, "bits": 5})
    except ValueError as exc:
        assert "bits=5" in str(exc), exc
    else:
        raise AssertionError("bits=5 accepted")
    return {"registry_head": list(quantization.QUANTIZATION_METHODS)[:3], "class": cls.__name__}


def version_warning_check() -> str:
    """A version outside the supported range is named in a warning when registering."""
    import sglang

    from autoround_vllm import sglang_plugin
    from autoround_vllm.vllm_plugin import version_warning

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("autoround_vllm.sglang_plugin").addHandler(handler)
    real = sglang.__version__
    sglang_plugin._registered.clear()
    sglang.__version__ = "0.7.1"
    try:
        sglang_plugin.register()
    finally:
        sglang.__version__ = real
    assert any("0.7.1" in r and ">=0.5.23,<0.6.0" in r for r in records), records
    assert version_warning(real, sglang_plugin.SUPPORTED_SGLANG, "SGLang") is None, real
    return records[-1]


def checkpoint_checks(checkpoint: Path) -> dict[str, Any]:
    """SGLang's ModelConfig picks ``autoround`` for the checkpoint, and keeps the user's choice."""
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.layers.quantization import get_quantization_config

    found = ModelConfig(model_path=str(checkpoint)).quantization
    assert found == "autoround", (checkpoint, found)
    config = get_quantization_config(found).from_config(
        json.loads((checkpoint / "config.json").read_text())["quantization_config"]
    )
    chosen = ModelConfig(model_path=str(checkpoint), quantization="auto-round").quantization
    assert chosen == "auto-round", (checkpoint, chosen)
    return {"found": found, "config": repr(config), "user_choice_kept": chosen}


def main() -> None:
    *checkpoints, result = sys.argv[1:]
    import sglang

    seen: dict[str, Any] = {"sglang": sglang.__version__, **registry_checks()}
    seen["checkpoints"] = {Path(c).name: checkpoint_checks(Path(c)) for c in checkpoints}
    seen["version_warning"] = version_warning_check()
    Path(result).write_text(json.dumps(seen, indent=1))


if __name__ == "__main__":
    main()
