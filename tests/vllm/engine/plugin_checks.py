"""Run in the vLLM venv: the plugin is found through the entry point and chosen as documented.

No engine is started. Prints ``OK`` and a JSON line of what was checked; exits non-zero on the
first failed check.
"""

from __future__ import annotations

import json
import logging
import sys


def main() -> None:
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS, get_quantization_config
    from vllm.platforms import current_platform
    from vllm.plugins import load_general_plugins

    load_general_plugins()  # what vLLM does in every process: runs our entry point
    assert "autoround" in QUANTIZATION_METHODS, QUANTIZATION_METHODS
    cls = get_quantization_config("autoround")
    assert cls.__name__ == "AutoRoundVllmConfig", cls
    w4 = {
        "quant_method": "auto-round",
        "packing_format": "auto_round:auto_gptq",
        "bits": 4,
        "group_size": 128,
        "sym": True,
        "data_type": "int",
        "block_name_to_quantize": "model.layers",
    }
    assert cls.override_quantization_method(w4, None) == "autoround"  # CPU: always ours
    assert cls.override_quantization_method(w4, "inc") is None  # the user's choice wins
    assert cls.override_quantization_method({"quant_method": "gptq"}, None) is None
    config = cls.from_config(w4)
    assert config.get_name() == "autoround"
    try:
        cls.from_config({**w4, "bits": 5})
    except ValueError as exc:
        assert "bits=5" in str(exc), exc
    else:
        raise AssertionError("bits=5 accepted")

    from autoround_vllm import vllm_plugin

    assert vllm_plugin.version_warning("0.32.0") is None
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("autoround_vllm.vllm_plugin").addHandler(handler)
    vllm_plugin._registered.clear()
    real = sys.modules["vllm"].__version__
    sys.modules["vllm"].__version__ = "0.40.1"
    try:
        vllm_plugin.register()
    finally:
        sys.modules["vllm"].__version__ = real
    assert any(">=0.32.0,<0.33.0" in r and "0.40.1" in r for r in records), records
    print("OK")
    print(json.dumps({"platform": current_platform.device_type, "warning": records[-1]}))


if __name__ == "__main__":
    main()
