"""One writer: the checkpoint oneshot + SignRoundModifier saves (compressed-tensors' compressor,
through llm-compressor's ``save_pretrained``) is what core's ``llm_compressor`` format writes for
the same tuned model, both translating autoround's grid with core's ``ct_qparams``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from autoround import quantize, save
from autoround.algorithms.signround import SignRoundSettings
from autoround_llmc import SignRoundModifier

pytestmark = pytest.mark.integration

WEIGHT_ARGS = ("num_bits", "group_size", "strategy", "symmetric", "type")


@pytest.mark.parametrize(("preset", "sym"), [("W4A16", True), ("W4A16_ASYM", False)])
def test_cores_llm_compressor_format_writes_what_the_modifier_saves(
    tmp_path, load_llama, run_oneshot, calibration, preset, sym
) -> None:
    ids = torch.tensor(calibration["input_ids"])
    settings = SignRoundSettings(iters=4, batch_size=4, amp=False)
    ours = quantize(load_llama(), "W4A16", sym=sym, tuning=settings, calibration=ids, progress=False)
    modifier = SignRoundModifier(scheme=preset, iters=4, batch_size=4, ignore=["lm_head"], amp=False)
    hosted = run_oneshot(load_llama(), [modifier])
    hosted.save_pretrained(tmp_path / "modifier", save_compressed=True)
    save(ours, tmp_path / "core", format="llm_compressor")

    theirs, mine = (load_file(tmp_path / d / "model.safetensors") for d in ("modifier", "core"))
    assert sorted(theirs) == sorted(mine)
    for name in ours.layers:
        for key in ("weight_packed", "weight_shape", "weight_zero_point"):
            if f"{name}.{key}" in theirs:
                assert torch.equal(mine[f"{name}.{key}"], theirs[f"{name}.{key}"]), f"{name}.{key}"
        # the modifier stores the scale in the weight's dtype (float32 here), core in float16 as
        # Intel does: the same values
        assert torch.equal(mine[f"{name}.weight_scale"].float(), theirs[f"{name}.weight_scale"]), name

    configs = [
        json.loads((tmp_path / d / "config.json").read_text())["quantization_config"]
        for d in ("modifier", "core")
    ]
    for config in configs:
        assert (config["quant_method"], config["format"], config["ignore"]) == (
            "compressed-tensors",
            "pack-quantized",
            ["lm_head"],
        )
    modifier_args, core_args = (next(iter(c["config_groups"].values()))["weights"] for c in configs)
    assert {k: modifier_args[k] for k in WEIGHT_ARGS} == {k: core_args[k] for k in WEIGHT_ARGS}
