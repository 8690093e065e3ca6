"""FP8_BLOCK weights (one scale per 128 x 128 tile) in the ``llm_compressor`` format, checked by
compressed-tensors itself: the config's weight arguments are its own ``FP8_BLOCK`` preset's, each
layer is an E4M3 ``weight`` with a ``weight_scale`` of (ceil(out / 128), ceil(in / 128)), and its
``ModelCompressor`` decompresses our checkpoint to exactly the in-memory weights (round-to-nearest
in float32 and bfloat16, SignRound in float32; the tiny llama's 96- and 160-wide layers all have
partial edge tiles). The full scheme (dynamic FP8 activations per group of 128) on a llama whose
widths are multiples of 128 (activation groups must divide them) is stored with the preset's
input activations too. Every other format refuses 2-D blocks before any work, naming
``llm_compressor``; autoround's own loaders refuse them naming the ones that read them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import autoround
from autoround.algorithms.signround import SignRoundSettings
from autoround.errors import SchemeError
from autoround.formats.base import CheckpointSpec
from autoround.formats.preflight import check_plan, check_schemes
from autoround.layer_plan import resolve
from autoround.schemes import PRESETS

FP8_BLOCK = PRESETS["FP8_BLOCK"].replace(act_bits=16)
BF16, FP32 = torch.bfloat16, torch.float32
#: case -> (model dtype, SignRound iterations or 0 for RTN, scheme)
CASES = {
    "rtn float32": (FP32, 0, FP8_BLOCK),
    "rtn bfloat16": (BF16, 0, FP8_BLOCK),
    "signround float32": (FP32, 5, FP8_BLOCK),
    "full scheme rtn float32": (FP32, 0, PRESETS["FP8_BLOCK"]),
}
#: The tiny llama's widths made multiples of 128, for the scheme's activation groups.
WIDE = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from tiny_models import TINY_LLAMA, build_model
    from transformers import LlamaConfig

    made: dict[str, tuple[Path, Any]] = {}

    def make(case: str) -> tuple[Path, Any]:
        if case not in made:
            dtype, iters, scheme = CASES[case]
            wide = WIDE if not scheme.is_weight_only else {}
            model = build_model(LlamaConfig(**{**TINY_LLAMA, **wide}), dtype=dtype)
            kwargs: dict[str, Any] = {}
            if iters:
                torch.manual_seed(1)
                kwargs = {
                    "tuning": SignRoundSettings(iters=iters, batch_size=4),
                    "calibration": torch.randint(0, 128, (4, 16)),
                }
            qm = autoround.quantize(model, scheme, progress=False, **kwargs)
            path = tmp_path_factory.mktemp("ct-fp8-block") / "ckpt"
            made[case] = autoround.save(qm, path, format="llm_compressor"), qm
        return made[case]

    return make


def _decompressed(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    """The checkpoint as compressed-tensors loads it: its config applied to a skeleton of the
    model, compressed (the layout's parameters), the file's tensors loaded, then decompressed."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from transformers import AutoConfig, AutoModelForCausalLM

    config = QuantizationConfig.model_validate(
        json.loads((path / "config.json").read_text())["quantization_config"]
    )
    skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    apply_quantization_config(skeleton, config)
    compressor = ModelCompressor(quantization_config=config)
    compressor.compress_model(skeleton)
    missing, unexpected = skeleton.load_state_dict(load_file(path / "model.safetensors"), strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    compressor.decompress_model(skeleton)
    return skeleton


@pytest.mark.parametrize("case", list(CASES))
def test_compressed_tensors_decompresses_our_checkpoint_to_the_quantized_weights(exported, case) -> None:
    path, qm = exported(case)
    dtype = CASES[case][0]
    loaded = _decompressed(path, dtype)
    assert qm.layers
    for name in qm.layers:
        weight = loaded.get_submodule(name).weight
        assert torch.equal(weight.to(dtype), qm.model.get_submodule(name).weight), name


@pytest.mark.parametrize("case", list(CASES))
def test_each_layer_is_stored_as_compressed_tensors_fp8_block_preset(exported, case) -> None:
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    path, qm = exported(case)
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    (group,) = config["config_groups"].values()
    preset = PRESET_SCHEMES["FP8_BLOCK"]
    assert QuantizationArgs.model_validate(group["weights"]) == preset["weights"]
    if CASES[case][2].is_weight_only:
        assert config["format"] == group["format"] == "naive-quantized"  # what it infers without activations
        assert group["input_activations"] is None
    else:
        assert config["format"] == group["format"] == "float-quantized"
        assert QuantizationArgs.model_validate(group["input_activations"]) == preset["input_activations"]
    tensors = load_file(path / "model.safetensors")
    for name, quant in qm.layers.items():
        out, inputs = qm.model.get_submodule(name).weight.shape
        assert tensors[f"{name}.weight"].dtype == torch.float8_e4m3fn
        assert tensors[f"{name}.weight"].shape == (out, inputs)
        scale = tensors[f"{name}.weight_scale"]
        assert scale.dtype == FP32 and scale.shape == (math.ceil(out / 128), math.ceil(inputs / 128))
        assert torch.equal(scale, quant.scale.float())


@pytest.mark.parametrize("fmt", ["auto_gptq", "auto_awq", "auto_round:auto_gptq", "gguf:q4_0"])
def test_other_formats_refuse_2d_blocks_naming_the_formats_that_store_them(fmt) -> None:
    with pytest.raises(
        SchemeError,
        match=rf"2-D weight blocks \(128, 128\).*'{fmt}'.*can store it: \['auto_round', 'llm_compressor'\]",
    ):
        check_schemes(FP8_BLOCK, None, fmt)


def test_the_plan_is_accepted_for_auto_round_and_llm_compressor(tiny_llama) -> None:
    """Both store partial edge tiles (llm_compressor padded; auto_round as Intel's FP8BlockQLinear:
    tests/core/formats/test_fp8_block_auto_round.py)."""
    plan = resolve(tiny_llama, FP8_BLOCK)
    check_plan(tiny_llama, plan, "llm_compressor")
    check_plan(tiny_llama, plan, "auto_round")


def test_autoround_loaders_refuse_a_block_scheme_naming_the_loaders_that_read_it() -> None:
    spec = CheckpointSpec(FP8_BLOCK, "auto_round", ("model.layers",))
    with pytest.raises(
        NotImplementedError, match=r"model.layers.0.mlp.up_proj: 2-D weight blocks.*llm_compressor"
    ):
        spec.scheme_for("model.layers.0.mlp.up_proj")
    with pytest.raises(NotImplementedError, match=r"2-D weight blocks"):
        CheckpointSpec(
            PRESETS["W4A16"],
            "auto_round",
            ("model.layers",),
            {"up_proj": {"group_size": [128, 128], "data_type": "fp", "bits": 8}},
        ).scheme_for("model.layers.0.mlp.up_proj")
