"""FP8_BLOCK (FP8 weights in 128x128 tiles, dynamic FP8 activations per group of 128 features) in
the ``auto_round`` format, written as Intel auto-round 0.16.1's ``FP8BlockQLinear`` export and
read back.

Reference: Intel's RTN export of the tiny dense Llama (tests/fixtures/intel/exports/ar_fp8_block,
scripts/intel/make_dynamic_act_exports.py): packing ``auto_round:fp8``, ``group_size`` /
``weight_block_size`` ``[128, 128]``, ``weight`` float8 and ``weight_scale_inv`` (row tiles,
column tiles) in bfloat16; every layer of the tiny model (64 / 128 wide) is one partial tile.
Intel's own loader fails on it (its reference.json records the TypeError), so the logits to match
are its in-memory model's, whose layers hold the dequantized weight rounded to bfloat16.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import TINY_LLAMA, build_model
from transformers import AutoModelForCausalLM, LlamaConfig

import autoround_hf
from autoround import quantize, save
from autoround.io import load_safetensors_dir
from autoround.loading import load_quantized
from autoround.nn import FloatQuantLinear
from autoround.nn.float_weights import dequantize_fp8_tiles

FIXTURES = Path(__file__).parents[2] / "fixtures" / "intel"
CASE = FIXTURES / "exports" / "ar_fp8_block"
PROMPT = [1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]


@pytest.fixture(scope="module")
def like_intel(tmp_path_factory) -> Path:
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny_llama_dense", dtype=torch.bfloat16)
    qm = quantize(model, "FP8_BLOCK", progress=False)
    return save(qm, tmp_path_factory.mktemp("fp8_block") / "ckpt", format="auto_round")


def test_tensors_equal_intels_export(like_intel) -> None:
    mine, theirs = load_safetensors_dir(like_intel), load_safetensors_dir(CASE)
    assert sorted(mine) == sorted(theirs)
    assert theirs["model.layers.0.mlp.down_proj.weight_scale_inv"].shape == (1, 1)
    for name, tensor in theirs.items():
        assert (mine[name].dtype, mine[name].shape) == (tensor.dtype, tensor.shape), name
        if tensor.element_size() == 1 and tensor.is_floating_point():  # float8: compare bytes
            assert torch.equal(mine[name].view(torch.uint8), tensor.view(torch.uint8)), name
        else:
            assert torch.equal(mine[name], tensor), name


def test_config_equals_intels_key_for_key(like_intel) -> None:
    for file in ("config.json", "quantization_config.json"):
        mine, theirs = (json.loads((d / file).read_text()) for d in (like_intel, CASE))
        if file == "config.json":
            mine, theirs = mine["quantization_config"], theirs["quantization_config"]
        assert mine.pop("autoround_version") and theirs.pop("autoround_version")
        assert mine == theirs, file
    assert theirs["packing_format"] == "auto_round:fp8" and theirs["group_size"] == [128, 128]


def test_tiles_dequantize_as_plain_torch_computes_them_with_partial_edge_tiles() -> None:
    """SmolLM2's 576 = 4.5 x 128: a (200, 576) weight has 2 x 5 tiles, the last row and column
    of tiles partial; each element is its code times its own tile's scale, looked up by hand."""
    g = torch.Generator().manual_seed(0)
    codes = (torch.randn(200, 576, generator=g) * 50).to(torch.float8_e4m3fn)
    scales = torch.rand(2, 5, generator=g).to(torch.bfloat16)
    dense = dequantize_fp8_tiles(codes, scales, (128, 128))
    for r, c in ((0, 0), (127, 127), (128, 128), (199, 575), (5, 513), (150, 400)):
        assert dense[r, c] == codes[r, c].float() * scales[r // 128, c // 128].float(), (r, c)
    assert dense.shape == (200, 576) and dense.dtype == torch.float32


def _rounded_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Intel's in-memory layers hold ``fp8 * scale`` rounded to bfloat16: ours, told to."""
    own = FloatQuantLinear.dequantized_weight
    monkeypatch.setattr(
        FloatQuantLinear,
        "dequantized_weight",
        lambda self, dtype=torch.float32: own(self, torch.bfloat16).to(dtype),
    )


@pytest.mark.parametrize("loader", ["load_quantized", "autoround-hf"])
def test_intels_export_loads_with_its_in_memory_logits_and_tokens(loader, monkeypatch) -> None:
    meta = json.loads((CASE / "reference.json").read_text())
    reference = load_file(CASE / "reference.safetensors")
    assert "TypeError" in meta["intel_load_error"]  # Intel's loader cannot read its own export
    _rounded_weights(monkeypatch)
    if loader == "autoround-hf":
        assert autoround_hf.installed()
        model = AutoModelForCausalLM.from_pretrained(CASE, dtype=torch.float32).eval()
    else:
        model = load_quantized(CASE, dtype=torch.float32)
    layers = [m for m in model.modules() if isinstance(m, FloatQuantLinear)]
    assert len(layers) == 14 and {(m.act_kind, m.act_group, m.layout.block) for m in layers} == {
        ("fp8_group", 128, (128, 128))
    }
    ids = torch.tensor([meta["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
        out = model.generate(
            ids, max_new_tokens=meta["new_tokens"], min_new_tokens=meta["new_tokens"], do_sample=False
        )
    torch.testing.assert_close(logits, reference["in_memory_logits"], rtol=0, atol=1e-5)
    assert out[0, ids.shape[1] :].tolist() == reference["in_memory_greedy"].tolist()


def test_a_float32_model_with_partial_tiles_round_trips_to_the_in_memory_logits(tmp_path) -> None:
    """576- and 320-wide layers (4.5 and 2.5 tiles) in a float32 model: the loaded layers (exact float32
    dequantize, inputs quantized per group of 128) give the in-memory model's logits."""
    sizes = {"hidden_size": 576, "intermediate_size": 320, "num_attention_heads": 9, "head_dim": 64}
    config = LlamaConfig(**{**TINY_LLAMA, **sizes, "num_key_value_heads": 3})
    qm = quantize(build_model(config), "FP8_BLOCK", progress=False)
    loaded = load_quantized(save(qm, tmp_path / "ckpt", format="auto_round"), dtype=torch.float32)
    tiles = load_safetensors_dir(tmp_path / "ckpt")["model.layers.0.mlp.down_proj.weight_scale_inv"]
    assert tiles.shape == (5, 3)  # 576 rows, 320 inputs
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        ours, theirs = qm.model(ids).logits, loaded(ids).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


def test_the_weight_only_tiles_round_trip_with_inputs_left_as_they_are(tmp_path) -> None:
    """FP8_BLOCK's weight-only form (act_bits=16): the same tiles, no act_* keys; the loaded
    layers quantize no input and give the in-memory model's logits."""
    qm = quantize(build_model(LlamaConfig(**TINY_LLAMA)), "FP8_BLOCK", act_bits=16, progress=False)
    path = save(qm, tmp_path / "ckpt", format="auto_round")
    config = json.loads((path / "quantization_config.json").read_text())
    assert config["group_size"] == [128, 128] and "act_bits" not in config
    loaded = load_quantized(path, dtype=torch.float32)
    layers = [m for m in loaded.modules() if isinstance(m, FloatQuantLinear)]
    assert len(layers) == 14 and all(m.act_kind is None for m in layers)
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, qm.model(ids).logits, rtol=0, atol=1e-5)
