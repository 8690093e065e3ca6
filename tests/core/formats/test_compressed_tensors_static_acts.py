"""Calibrated activations in the ``llm_compressor`` format: ``FP8_STATIC`` (FP8 per-channel
weights, one static FP8 scale per layer input: ``input_scale``) and NVFP4 W4A4 (NVFP4 weights,
activations in E4M3-scaled blocks of 16 relative to a calibrated ``input_global_scale``),
checked by compressed-tensors and transformers themselves:

* the config's groups are compressed-tensors' own presets (``FP8``'s input arguments with
  ``FP8_DYNAMIC``'s per-channel weights, as Intel's FP8_STATIC; ``NVFP4``), its ``format`` the
  layouts compressed-tensors infers;
* each layer's activation scale is Intel's formula of the layer's calibrated range, written out
  in plain torch here (``max(absmax / 448, 1 / (448 * 512))``; ``448 * 6 * (1 / absmax)``);
* compressed-tensors' ``ModelCompressor`` decompresses the weights to the in-memory ones and
  takes the stored scales as its parameters;
* transformers (compressed-tensors' integration, which emulates the activation quantization on
  the CPU) generates the in-memory model's greedy tokens (the in-memory model quantizes each
  layer's input with the same calibrated range through its hooks).

The models are built by :mod:`calibrated_acts` (RTN weights, ranges measured on a prompt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from calibrated_acts import calibrated
from safetensors.torch import load_file
from tiny_models import TINY_LLAMA, build_model
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

import autoround
from autoround.errors import FormatError
from autoround.formats.preflight import check_schemes
from autoround.layer_quant import LayerQuant
from autoround.schemes import PRESETS

BF16, FP32 = torch.bfloat16, torch.float32
#: case -> (model dtype, our preset, compressed-tensors' preset of the input arguments and of
#: the weights, the layout, the activation tensor).
CASES: dict[str, tuple[torch.dtype, str, str, str, str, str]] = {
    "fp8_static": (FP32, "FP8_STATIC", "FP8", "FP8_DYNAMIC", "float-quantized", "input_scale"),
    "nvfp4": (BF16, "NVFP4", "NVFP4", "NVFP4", "nvfp4-pack-quantized", "input_global_scale"),
}
PROMPT = [1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]


def _model(dtype: torch.dtype) -> torch.nn.Module:
    # initialised wider than by default, so greedy choices are far from ties
    return build_model(LlamaConfig(**{**TINY_LLAMA, "initializer_range": 0.1}), dtype=dtype)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    made: dict[str, tuple[Path, Any]] = {}

    def make(case: str) -> tuple[Path, Any]:
        if case not in made:
            dtype, preset = CASES[case][:2]
            qm = calibrated(_model(dtype), preset)
            path = tmp_path_factory.mktemp("ct-static") / "ckpt"
            made[case] = autoround.save(qm, path, format="llm_compressor"), qm
        return made[case]

    return make


def _expected_scale(case: str, absmax: torch.Tensor) -> torch.Tensor:
    """Intel's formulas, in plain torch (float32)."""
    amax = absmax.reshape(1).float()
    if case == "fp8_static":
        return torch.clamp(amax / 448.0, min=1.0 / (448.0 * 512.0))
    return torch.tensor([448.0 * 6.0], dtype=FP32) * (1.0 / amax)


@pytest.mark.parametrize("case", list(CASES))
def test_the_config_is_compressed_tensors_own_preset_and_layout(exported, case) -> None:
    from compressed_tensors.quantization import preset_name_to_scheme

    path, _ = exported(case)
    _, _, act_preset, weight_preset, layout, _ = CASES[case]
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    assert config["format"] == layout
    (group,) = config["config_groups"].values()
    assert group["format"] == layout
    inputs = preset_name_to_scheme(act_preset, ["Linear"]).input_activations
    assert group["input_activations"] == inputs.model_dump(mode="json")
    assert group["weights"] == preset_name_to_scheme(weight_preset, ["Linear"]).weights.model_dump(
        mode="json"
    )


@pytest.mark.parametrize("case", list(CASES))
def test_each_layer_stores_intels_scale_of_its_calibrated_range(exported, case) -> None:
    path, qm = exported(case)
    leaf = CASES[case][5]
    tensors = load_file(path / "model.safetensors")
    for name, quant in qm.layers.items():
        stored = tensors[f"{name}.{leaf}"]
        assert stored.dtype == FP32 and stored.shape == (1,), name
        assert torch.equal(stored, _expected_scale(case, quant.input_absmax)), name
    assert not any(key.startswith("lm_head.input") for key in tensors)


def _decompressed(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    """The checkpoint as compressed-tensors loads it (see test_compressed_tensors_float)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config

    config = QuantizationConfig.model_validate(
        json.loads((path / "config.json").read_text())["quantization_config"]
    )
    skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    apply_quantization_config(skeleton, config)
    compressor = ModelCompressor(quantization_config=config)
    compressor.compress_model(skeleton)
    missing, unexpected = skeleton.load_state_dict(load_file(path / "model.safetensors"), strict=False)
    assert unexpected == [], unexpected
    # compressed-tensors makes zero points of the symmetric activations, which are not stored
    assert {key for key in missing if not key.endswith("input_zero_point")} <= {"lm_head.weight"}, missing
    compressor.decompress_model(skeleton)
    return skeleton


@pytest.mark.parametrize("case", list(CASES))
def test_compressed_tensors_decompresses_the_weights_and_takes_the_scales(exported, case) -> None:
    path, qm = exported(case)
    dtype, leaf = CASES[case][0], CASES[case][5]
    loaded = _decompressed(path, dtype)
    for name, quant in qm.layers.items():
        layer = loaded.get_submodule(name)
        if case == "fp8_static":
            assert torch.equal(layer.weight.to(dtype), qm.model.get_submodule(name).weight), name
        else:
            # NVFP4 in bfloat16 at this model's wider init: compressed-tensors' bfloat16 rounding of
            # e2m1 * (block / global) is one bfloat16 step off the in-memory weight in a few
            # hundred elements of one layer (weight-only NVFP4 too; at the default init none)
            torch.testing.assert_close(layer.weight, qm.model.get_submodule(name).weight, rtol=2**-7, atol=0)
        param = getattr(layer, leaf)  # in the model's dtype (FP8) or float32 (NVFP4's global scale)
        assert torch.equal(param, _expected_scale(case, quant.input_absmax).to(param.dtype)), name


def _greedy_and_logits(model: torch.nn.Module) -> tuple[list[int], torch.Tensor]:
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
        out = model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    return out[0, len(PROMPT) :].tolist(), logits


def test_transformers_generates_the_in_memory_models_greedy_tokens_static_fp8(exported) -> None:
    path, qm = exported("fp8_static")
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=FP32)
    ours, ours_logits = _greedy_and_logits(qm.model)
    theirs, their_logits = _greedy_and_logits(loaded)
    assert ours == theirs
    # the same float32 scale, division and E4M3 rounding: compressed-tensors' static FP8 is
    # Intel's, value for value
    assert torch.equal(ours_logits, their_logits)


def test_transformers_nvfp4_activations_are_compressed_tensors_own_formula(exported, monkeypatch) -> None:
    """compressed-tensors computes each block's scale ``max|block| / 6`` in the input's dtype
    (bfloat16: its NVFP4 weights decompress to bfloat16 and a float32 model does not run), Intel
    in float32, so a block whose scale falls near an E4M3 midpoint rounds the other way (about
    1% of the blocks here). The tiny random model is sensitive enough for that to change its
    greedy text; with compressed-tensors' own qdq in our hooks the two models agree."""
    from compressed_tensors.quantization import QuantizationStatus
    from compressed_tensors.quantization.lifecycle.forward import forward_quantize

    path, qm = exported("nvfp4")
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=BF16)
    intel_logits = _greedy_and_logits(qm.model)[1]
    theirs, their_logits = _greedy_and_logits(loaded)
    assert (intel_logits - their_logits).abs().max().item() > 0.1  # the formulas do differ
    args = loaded.get_submodule(next(iter(qm.layers))).quantization_scheme.input_activations

    def compressed_tensors_qdq(x: torch.Tensor, kind: str, group_size=None, absmax=None, range_factor=1.0):
        holder = torch.nn.Module()  # what forward_quantize reads of a layer: its global scale
        holder.input_global_scale = torch.nn.Parameter(_expected_scale("nvfp4", absmax), requires_grad=False)
        holder.quantization_status = QuantizationStatus.FROZEN
        return forward_quantize(holder, x, "input", args)

    monkeypatch.setattr("autoround.nn.act_hooks.qdq_activation", compressed_tensors_qdq)
    ours, ours_logits = _greedy_and_logits(qm.model)
    assert ours == theirs
    assert (ours_logits - their_logits).abs().max().item() < 0.05


def test_a_layer_without_its_calibrated_range_is_refused_naming_it(exported, tmp_path) -> None:
    _, qm = exported("fp8_static")
    name = next(iter(qm.layers))
    quant = qm.layers[name]
    qm.layers[name] = LayerQuant(quant.scheme, quant.scale, quant.zero, quant.global_scale, None)
    try:
        with pytest.raises(
            FormatError, match=rf"{name}: its input_scale needs the layer's calibrated input range"
        ):
            autoround.save(qm, tmp_path / "ckpt", format="llm_compressor")
    finally:
        qm.layers[name] = quant
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("preset", ["FP8_STATIC", "NVFP4"])
@pytest.mark.parametrize("fmt", ["auto_gptq", "auto_awq", "auto_round:auto_gptq"])
def test_formats_without_calibrated_scales_refuse_them_naming_those_that_store_them(preset, fmt) -> None:
    with pytest.raises(
        NotImplementedError,
        match=rf"not built for format\(s\) \['{fmt}'\].*can store it: \['auto_round', 'llm_compressor'\]",
    ):
        check_schemes(PRESETS[preset], None, fmt)
    assert check_schemes(PRESETS[preset], None, "llm_compressor,auto_round") == (
        "llm_compressor",
        "auto_round",
    )
