"""Calibrated activations in the ``auto_round`` format (``FP8_STATIC``'s ``input_scale``, NVFP4
W4A4's ``input_global_scale``), written as Intel auto-round 0.16.1 writes them and read back.

* Intel's exports of the tiny dense Llama (tests/fixtures/intel/exports/ar_fp8_static,
  ar_nvfp4_w4a4; scripts/intel/make_static_act_exports.py: RTN with a local calibration text)
  carry each layer's calibrated ``act_max`` in their reference file. Our RTN of the same model,
  each layer given Intel's range, saved in ``auto_round``, equals Intel's export tensor for
  tensor (dtype and bytes) and config key for key.
* A checkpoint loads (``load_quantized``) into float layers that quantize their inputs with the
  stored scale; a float32 model round-trips to the in-memory model's logits (its hooks use the
  same range); a missing or misshapen ``input_scale`` / ``input_global_scale`` is a
  CheckpointError naming the tensor.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from calibrated_acts import calibrated
from safetensors.torch import load_file, save_file
from tiny_models import TINY_LLAMA, build_model
from transformers import AutoModelForCausalLM, LlamaConfig

import autoround
from autoround import save
from autoround.errors import CheckpointError
from autoround.io import load_safetensors_dir
from autoround.loading import load_quantized
from autoround.nn import FloatQuantLinear

FIXTURES = Path(__file__).parents[2] / "fixtures" / "intel"
EXPORTS = FIXTURES / "exports"
#: Intel's fixture -> our preset, the activation tensor.
CASES: dict[str, tuple[str, str]] = {
    "ar_fp8_static": ("FP8_STATIC", "input_scale"),
    "ar_nvfp4_w4a4": ("NVFP4", "input_global_scale"),
}
PROMPT = [1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]


def _intel_ranges(case: str) -> dict[str, torch.Tensor]:
    reference = load_file(EXPORTS / case / "reference.safetensors")
    return {
        key.removeprefix("act_max."): t.reshape(())
        for key, t in reference.items()
        if key.startswith("act_max.")
    }


@pytest.fixture(scope="module")
def like_intel(tmp_path_factory):
    made: dict[str, tuple[Path, Any]] = {}

    def make(case: str) -> tuple[Path, Any]:
        if case not in made:
            model = AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny_llama_dense", dtype=torch.bfloat16)
            qm = calibrated(model, CASES[case][0], _intel_ranges(case))
            made[case] = save(qm, tmp_path_factory.mktemp(case) / "ckpt", format="auto_round"), qm
        return made[case]

    return make


@pytest.mark.parametrize("case", list(CASES))
def test_tensors_equal_intels_export(case, like_intel) -> None:
    path, _ = like_intel(case)
    mine, theirs = load_safetensors_dir(path), load_safetensors_dir(EXPORTS / case)
    assert sorted(mine) == sorted(theirs)
    leaf = CASES[case][1]
    assert sum(key.endswith(f".{leaf}") for key in theirs) == 14
    for name, tensor in theirs.items():
        assert (mine[name].dtype, mine[name].shape) == (tensor.dtype, tensor.shape), name
        if tensor.element_size() == 1 and tensor.is_floating_point():  # float8: compare bytes
            assert torch.equal(mine[name].view(torch.uint8), tensor.view(torch.uint8)), name
        else:
            assert torch.equal(mine[name], tensor), name


@pytest.mark.parametrize("case", list(CASES))
def test_config_equals_intels_key_for_key(case, like_intel) -> None:
    path, _ = like_intel(case)
    for file in ("config.json", "quantization_config.json"):
        mine, theirs = (json.loads((d / file).read_text()) for d in (path, EXPORTS / case))
        if file == "config.json":
            for key in ("dtype", "tie_word_embeddings", "architectures"):
                assert mine.get(key) == theirs.get(key), key
            mine, theirs = mine["quantization_config"], theirs["quantization_config"]
        assert mine.pop("autoround_version") and theirs.pop("autoround_version")
        assert mine == theirs, file


# --- reading them back --------------------------------------------------------------------------

FP32 = torch.float32


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """A float32 tiny Llama per case, saved in ``auto_round`` (scales float32: exact)."""
    made: dict[str, tuple[Path, Any]] = {}

    def make(case: str) -> tuple[Path, Any]:
        if case not in made:
            model = build_model(LlamaConfig(**{**TINY_LLAMA, "initializer_range": 0.1}))
            qm = calibrated(model, CASES[case][0])
            made[case] = save(qm, tmp_path_factory.mktemp(case) / "ckpt", format="auto_round"), qm
        return made[case]

    return make


def _scale(case: str, absmax: torch.Tensor) -> torch.Tensor:
    """Intel's formulas in plain torch: FP8's ``max(absmax / 448, 1 / (448 * 512))``, NVFP4's
    global scale ``448 * 6 * (1 / absmax)`` (float32)."""
    amax = absmax.reshape(()).float()
    if case == "ar_fp8_static":
        return torch.clamp(amax / 448.0, min=1.0 / (448.0 * 512.0))
    return torch.tensor(448.0 * 6.0) * (1.0 / amax)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([PROMPT])).logits[0].float()


@pytest.mark.parametrize("case", list(CASES))
def test_the_loaded_layers_quantize_their_inputs_with_the_stored_scale(case, round_trip) -> None:
    path, qm = round_trip(case)
    loaded = load_quantized(path, dtype=FP32)
    layers = {n: m for n, m in loaded.named_modules() if isinstance(m, FloatQuantLinear)}
    assert sorted(layers) == sorted(qm.layers)
    for name, layer in layers.items():
        assert layer.act_kind == ("fp8_static" if case == "ar_fp8_static" else "nvfp4")
        # the stored scale's range gives that scale again (the formula's inverse)
        assert torch.equal(_scale(case, layer.input_absmax), _scale(case, qm.layers[name].input_absmax)), name
    ours, theirs = _logits(qm.model), _logits(loaded)
    # FP8: the same float32 weights and input scales; NVFP4: the weight rounded once more
    # (e2m1 * block / global in float32, the in-memory one in the weights' own arithmetic)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=0 if case == "ar_fp8_static" else 1e-4)
    layer = next(iter(layers.values()))
    x = torch.randn(2, layer.in_features) * 3
    assert not torch.equal(layer.quantize_input(x), x)  # the inputs are quantized
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        greedy = [
            m.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False) for m in (qm.model, loaded)
        ]
    assert greedy[0].tolist() == greedy[1].tolist()


def _edited(source: Path, target: Path, key: str, value: torch.Tensor | None) -> Path:
    shutil.copytree(source, target)
    tensors = load_file(target / "model.safetensors")
    if value is None:
        del tensors[key]
    else:
        tensors[key] = value
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.mark.parametrize("case", list(CASES))
def test_a_missing_or_misshapen_activation_scale_is_a_checkpoint_error_naming_it(
    case, round_trip, tmp_path
) -> None:
    path, _ = round_trip(case)
    key = f"model.layers.1.mlp.down_proj.{CASES[case][1]}"
    with pytest.raises(CheckpointError, match=rf"{key} is missing from"):
        load_quantized(_edited(path, tmp_path / "missing", key, None))
    with pytest.raises(CheckpointError, match=rf"{key} has shape \(2,\) .* needs? \(1,\)"):
        load_quantized(_edited(path, tmp_path / "shape", key, torch.ones(2)))


@pytest.mark.parametrize("case", list(CASES))
def test_the_full_pipeline_saves_both_formats_and_loads_back_with_the_in_memory_text(case, tmp_path) -> None:
    """RTN with calibration (each layer's range observed on the calibration ids) -> ``auto_round``
    and ``llm_compressor`` in one save -> core's loader gives the in-memory model's greedy text."""
    preset, leaf = CASES[case]
    model = build_model(LlamaConfig(**{**TINY_LLAMA, "initializer_range": 0.1}))
    calibration = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    qm = autoround.quantize(model, preset, calibration=calibration, progress=False)
    assert all(q.input_absmax is not None and q.input_absmax > 0 for q in qm.layers.values())
    save(qm, tmp_path, format="auto_round,llm_compressor")
    for sub in ("auto-round", "llm-compressor"):
        tensors = load_safetensors_dir(tmp_path / sub)
        for name, quant in qm.layers.items():
            assert torch.equal(
                tensors[f"{name}.{leaf}"].float(), _scale(case, quant.input_absmax).reshape(1)
            ), name
    loaded = load_quantized(tmp_path / "auto-round", dtype=FP32)
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        greedy = [
            m.generate(ids, max_new_tokens=8, min_new_tokens=8, do_sample=False) for m in (qm.model, loaded)
        ]
    assert greedy[0].tolist() == greedy[1].tolist()


def test_llm_compressor_nvfp4_tensors_equal_intels_llm_compressor_export(tmp_path) -> None:
    """Intel's ``llm_compressor`` export of NVFP4 W4A4 (fixture ``llmc_nvfp4_w4a4``): the same
    tensors, bytes and dtypes, and the same ``input_activations`` (compressed-tensors' preset);
    Intel leaves each group's ``format`` null where ours names the layout."""
    reference = load_file(EXPORTS / "llmc_nvfp4_w4a4" / "reference.safetensors")
    ranges = {
        k.removeprefix("act_max."): t.reshape(()) for k, t in reference.items() if k.startswith("act_max.")
    }
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny_llama_dense", dtype=torch.bfloat16)
    path = save(calibrated(model, "NVFP4", ranges), tmp_path / "ckpt", format="llm_compressor")
    mine, theirs = load_safetensors_dir(path), load_safetensors_dir(EXPORTS / "llmc_nvfp4_w4a4")
    assert sorted(mine) == sorted(theirs)
    for name, tensor in theirs.items():
        assert mine[name].dtype == tensor.dtype, name
        same = (
            torch.equal(mine[name].view(torch.uint8), tensor.view(torch.uint8))
            if tensor.element_size() == 1
            else torch.equal(mine[name], tensor)
        )
        assert same, name
    configs = [
        json.loads((d / "config.json").read_text())["quantization_config"]
        for d in (path, EXPORTS / "llmc_nvfp4_w4a4")
    ]
    groups = [c["config_groups"]["group_0"] for c in configs]
    assert groups[0]["input_activations"] == groups[1]["input_activations"]
    assert groups[0]["weights"] == groups[1]["weights"]
    assert [c["format"] for c in configs] == ["nvfp4-pack-quantized"] * 2


def test_llm_compressor_fp8_static_is_intels_export_with_float32_scales(tmp_path) -> None:
    """Intel's ``llm_compressor`` export of FP8_STATIC (fixture ``llmc_fp8_static``) holds its
    scales in the model's dtype and names no observer; ours keeps them float32 (exact) with
    compressed-tensors' preset arguments: the same FP8 weights, and scales equal once rounded."""
    reference = load_file(EXPORTS / "llmc_fp8_static" / "reference.safetensors")
    ranges = {
        k.removeprefix("act_max."): t.reshape(()) for k, t in reference.items() if k.startswith("act_max.")
    }
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny_llama_dense", dtype=torch.bfloat16)
    path = save(calibrated(model, "FP8_STATIC", ranges), tmp_path / "ckpt", format="llm_compressor")
    mine, theirs = load_safetensors_dir(path), load_safetensors_dir(EXPORTS / "llmc_fp8_static")
    assert sorted(mine) == sorted(theirs)
    for name, tensor in theirs.items():
        if name.endswith((".weight_scale", ".input_scale")):
            assert mine[name].dtype == torch.float32 and tensor.dtype == torch.bfloat16, name
            assert torch.equal(mine[name].to(torch.bfloat16), tensor), name
        elif tensor.dtype == torch.float8_e4m3fn:
            assert torch.equal(mine[name].view(torch.uint8), tensor.view(torch.uint8)), name
        else:
            assert torch.equal(mine[name], tensor), name
    configs = [
        json.loads((d / "config.json").read_text())["quantization_config"]
        for d in (path, EXPORTS / "llmc_fp8_static")
    ]
    inputs = [c["config_groups"]["group_0"]["input_activations"] for c in configs]
    assert inputs[0] == {**inputs[1], "observer": "static_minmax"}
