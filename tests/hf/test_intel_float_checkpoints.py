"""Intel auto-round 0.16.1's weight-only float checkpoints (``auto_round`` format: MXFP4, MXFP8,
NVFP4 with act_bits=16, FPW8A16) load through autoround-hf and give Intel's logits.

Fixtures: tests/fixtures/intel/exports/ar_{mxfp4,mxfp8,nvfp4}_a16, ar_fpw8a16 and ar_fp8_g32, made by
scripts/intel/make_float_exports.py (RTN). Intel's own loader refuses all four (it has inference
backends for MX / NV only with quantized activations, and its FP8 one refuses group_size 0:
reference.json records the errors), so the reference is Intel's in-memory quantized model, whose
Linear weights are its quantize-dequantize values held in the model dtype (bf16), run in float32:

* MX: ``e2m1/e4m3 * 2**k`` is exact in bf16, so our float32 dequantization is the same weight and
  the logits are bit-identical.
* NVFP4: ``e2m1 * scale / global_scale`` is rounded once into bf16 in Intel's model; rounding our
  float32 weight to bf16 the same way gives bit-identical logits (unrounded: within 1e-2).
* FP8: Intel's export stores the per-tensor scale cast to bf16 (``FP8QLinear``) while its in-memory
  weights are ``bf16(fp8 * float32 scale)`` (checked in the Intel venv: equal to that, not to the
  stored scale's product), so the checkpoint itself is ~0.2% off the in-memory model in the
  scale: logits agree within 1e-2 (seen 0.006), the greedy tokens exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import autoround_hf
from autoround.errors import CheckpointError
from autoround.loading import load_dense, load_quantized
from autoround.nn import FloatQuantLinear
from autoround.nn import float_weights as fw
from autoround_hf import AutoRoundConfig

EXPORTS = Path(__file__).parents[1] / "fixtures" / "intel" / "exports"
FIXTURES = ["ar_mxfp4_a16", "ar_mxfp8_a16", "ar_nvfp4_a16", "ar_fpw8a16", "ar_fp8_g32"]
#: Logit tolerance where Intel's in-memory weights are rounded otherwise than the checkpoint's.
TOL = 1e-2

pytestmark = pytest.mark.filterwarnings("ignore:You passed `quantization_config`")


def _reference(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    path = EXPORTS / name
    return load_file(path / "reference.safetensors"), json.loads((path / "reference.json").read_text())


def _load(path: Path, **kw) -> torch.nn.Module:
    assert autoround_hf.installed()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kw).eval()


def _run(model: torch.nn.Module, ids: list[int], new_tokens: int = 0) -> tuple[torch.Tensor, list[int]]:
    """Logits of ``ids`` and ``new_tokens`` greedy tokens (none when 0)."""
    prompt = torch.tensor([ids])
    with torch.no_grad():
        logits = model(prompt).logits[0].float()
        if not new_tokens:
            return logits, []
        out = model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return logits, out[0, len(ids) :].tolist()


@pytest.mark.parametrize("name", FIXTURES)
def test_intel_float_checkpoint_gives_intels_logits_and_tokens(name, monkeypatch) -> None:
    ref, meta = _reference(name)
    assert "intel_load_error" in meta  # Intel cannot load these: its in-memory model is the reference
    model = _load(EXPORTS / name)
    layers = [m for m in model.modules() if isinstance(m, FloatQuantLinear)]
    assert len(layers) == 14 and all(m.backend == "torch" for m in layers)
    logits, tokens = _run(model, meta["input_ids"], meta["new_tokens"])
    assert tokens == ref["in_memory_greedy"].tolist()
    if name.startswith("ar_mx"):
        # bit-identical on the CPU the fixture was made on (AVX512); elsewhere the matmuls sum in
        # another order (ATEN_CPU_CAPABILITY=avx2): float rounding only, the weights are exact
        torch.testing.assert_close(logits, ref["in_memory_logits"], rtol=1e-5, atol=1e-5)
        return
    assert (logits - ref["in_memory_logits"]).abs().max().item() < TOL
    if name == "ar_nvfp4_a16":  # Intel holds the dequantized weight in bf16: round ours the same way
        exact = FloatQuantLinear.dequantized_weight
        monkeypatch.setattr(
            FloatQuantLinear, "dequantized_weight", lambda self, dtype: exact(self, torch.bfloat16).to(dtype)
        )
        torch.testing.assert_close(
            _run(model, meta["input_ids"])[0], ref["in_memory_logits"], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("name", ["ar_mxfp4_a16", "ar_nvfp4_a16"])
def test_explicit_config_core_loaders_and_dense_agree(name) -> None:
    _, meta = _reference(name)
    hf = _load(EXPORTS / name, quantization_config=AutoRoundConfig(backend="torch"))
    expected = _run(hf, meta["input_ids"])[0]
    for model in (
        load_quantized(EXPORTS / name, dtype=torch.float32),
        load_dense(EXPORTS / name, torch.float32),
    ):
        assert torch.equal(_run(model, meta["input_ids"])[0], expected)
    with pytest.raises(ValueError, match="torch"):
        _load(EXPORTS / name, quantization_config=AutoRoundConfig(backend="cpu"))


# --- the dequantize formulas, against plain torch and against compressed-tensors ---------------


def _plain_e2m1(code: int) -> float:
    """E2M1 by its bit fields: sign, 2 exponent bits (bias 1), 1 mantissa bit."""
    sign, exp, man = (code >> 3) & 1, (code >> 1) & 3, code & 1
    value = man * 0.5 if exp == 0 else (1 + man * 0.5) * 2.0 ** (exp - 1)
    return -value if sign else value


def test_e2m1_unpacking_matches_the_bit_field_formula() -> None:
    packed = torch.arange(256, dtype=torch.uint8).reshape(4, 64)
    expected = torch.tensor([[_plain_e2m1(b & 15), _plain_e2m1(b >> 4)] for b in range(256)]).reshape(4, 128)
    assert torch.equal(fw.unpack_e2m1(packed), expected)


def test_block_formulas_match_plain_torch() -> None:
    g = torch.Generator().manual_seed(0)
    packed = torch.randint(0, 256, (6, 32), dtype=torch.uint8, generator=g)
    codes = fw.unpack_e2m1(packed)  # checked above
    e8m0 = torch.randint(110, 140, (6, 2), dtype=torch.uint8, generator=g)
    plain = codes * torch.repeat_interleave(2.0 ** (e8m0.float() - 127), 32, dim=1)
    assert torch.equal(fw.dequantize_mxfp4(packed, e8m0), plain)
    fp8 = (torch.randn(6, 64, generator=g) * 50).to(torch.float8_e4m3fn)
    assert torch.equal(
        fw.dequantize_mxfp8(fp8, e8m0),
        fp8.float() * torch.repeat_interleave(2.0 ** (e8m0.float() - 127), 32, 1),
    )
    nv_scale = (torch.rand(6, 4, generator=g) * 400).to(torch.float8_e4m3fn)
    gs = torch.tensor([1234.5])
    plain_nv = codes * torch.repeat_interleave(nv_scale.float() / gs, 16, dim=1)
    assert torch.equal(fw.dequantize_nvfp4(packed, nv_scale, gs), plain_nv)
    assert torch.equal(fw.dequantize_fp8(fp8, torch.tensor([0.25], dtype=torch.bfloat16)), fp8.float() * 0.25)
    assert torch.isnan(fw.e8m0_to_float(torch.tensor([255], dtype=torch.uint8))).all()


def test_fp4_codes_round_trip_compressed_tensors_packing() -> None:
    from compressed_tensors.compressors.nvfp4.helpers import pack_fp4_to_uint8, unpack_fp4_from_uint8

    g = torch.Generator().manual_seed(1)
    grid = torch.tensor([_plain_e2m1(c) for c in range(16)])
    values = grid[torch.randint(0, 16, (8, 64), generator=g)]
    packed = pack_fp4_to_uint8(values)
    assert torch.equal(fw.unpack_e2m1(packed), values)
    assert torch.equal(fw.unpack_e2m1(packed), unpack_fp4_from_uint8(packed, 8, 64, dtype=torch.float32))


@pytest.mark.parametrize(("name", "preset"), [("ar_mxfp4_a16", "MXFP4A16"), ("ar_nvfp4_a16", "NVFP4A16")])
def test_fixture_layers_match_compressed_tensors_decompression(name, preset) -> None:
    """Intel's MX / NV tensors are compressed-tensors' layout: its decompressor reads them as we do."""
    from compressed_tensors.compressors.mxfp4.base import MXFP4PackedCompressor
    from compressed_tensors.compressors.nvfp4.base import NVFP4PackedCompressor
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import PRESET_SCHEMES

    compressor = MXFP4PackedCompressor if preset.startswith("MX") else NVFP4PackedCompressor
    scheme = QuantizationScheme(targets=["Linear"], **PRESET_SCHEMES[preset])
    tensors = load_file(EXPORTS / name / "model.safetensors")
    prefix = "model.layers.0.mlp.down_proj."
    stored = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
    theirs = compressor.decompress(dict(stored), scheme)["weight"]  # computed in bf16
    ours = fw.dequantize("mxfp4" if preset.startswith("MX") else "nvfp4", stored)
    if preset.startswith("MX"):  # powers of two times E2M1: exact in bf16 too
        assert torch.equal(ours.to(theirs.dtype), theirs)
    else:  # bf16 rounds the scale quotient and the product: one bf16 step apart at most
        torch.testing.assert_close(ours.to(theirs.dtype), theirs, rtol=2**-7, atol=0)


# --- refusals: missing or misshapen scales, activation quantization -----------------------------


def _broken_copy(tmp_path: Path, name: str, edit) -> Path:
    target = tmp_path / name
    shutil.copytree(EXPORTS / name, target)
    tensors = load_file(target / "model.safetensors")
    edit(tensors)
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


KEY = "model.layers.1.self_attn.k_proj."
BROKEN = {
    "nv_global_scale_missing": ("ar_nvfp4_a16", lambda t: t.pop(KEY + "weight_global_scale"), "is missing"),
    "nv_global_scale_shape": (
        "ar_nvfp4_a16",
        lambda t: t.update({KEY + "weight_global_scale": torch.ones(2)}),
        r"has shape \(2,\)",
    ),
    "nv_block_scale_missing": ("ar_nvfp4_a16", lambda t: t.pop(KEY + "weight_scale"), "is missing"),
    "nv_block_scale_shape": (
        "ar_nvfp4_a16",
        lambda t: t.update({KEY + "weight_scale": t[KEY + "weight_scale"][:, :2].contiguous()}),
        r"has shape .*data_type=nv_fp",
    ),
    "nv_block_scale_dtype": (
        "ar_nvfp4_a16",
        lambda t: t.update({KEY + "weight_scale": t[KEY + "weight_scale"].float()}),
        "is float32, but a packed tensor needs float8_e4m3fn",
    ),
    "mx_block_scale_missing": ("ar_mxfp4_a16", lambda t: t.pop(KEY + "weight_scale"), "is missing"),
    "mx_block_scale_shape": (
        "ar_mxfp4_a16",
        lambda t: t.update({KEY + "weight_scale": t[KEY + "weight_scale"].t().contiguous()}),
        "has shape",
    ),
    "fp8_scale_missing": ("ar_fpw8a16", lambda t: t.pop(KEY + "weight_scale"), "is missing"),
    "fp8_scale_shape": (
        "ar_fpw8a16",
        lambda t: t.update({KEY + "weight_scale": torch.ones(32, 1, dtype=torch.bfloat16)}),
        r"has shape \(32, 1\)",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_missing_or_misshapen_scales_are_refused_naming_the_tensor(tmp_path, case) -> None:
    name, edit, message = BROKEN[case]
    path = _broken_copy(tmp_path, name, edit)
    leaf = "weight_global_scale" if "global" in case else "weight_scale"
    for loader in (lambda: _load(path), lambda: load_quantized(path)):
        with pytest.raises(CheckpointError, match=message) as err:
            loader()
        assert KEY + leaf in str(err.value)


@pytest.mark.parametrize(
    ("act_fields", "message"),
    [
        # NVFP4 W4A4 is read, with its calibrated input_global_scale, which this export lacks
        ({"act_bits": 4}, r"model.layers.0.self_attn.q_proj.input_global_scale is missing"),
        # activations not built (or dynamic ones, read through compressed-tensors) stay refused
        ({"act_bits": 8}, r"act_bits=8 \(act_data_type='nv_fp4_with_static_gs'.*act_bits=8 is not built"),
        (
            {"act_bits": 8, "act_data_type": "fp", "act_group_size": -1},
            r"act_bits=8 \(act_data_type='fp'.*autoround reads calibrated activations",
        ),
    ],
)
def test_activation_quantization_is_read_only_where_its_scale_is_calibrated(
    tmp_path, act_fields, message
) -> None:
    target = tmp_path / "w4a4"
    shutil.copytree(EXPORTS / "ar_nvfp4_a16", target)
    config = json.loads((target / "config.json").read_text())
    config["quantization_config"].update({"act_data_type": "nv_fp4_with_static_gs", **act_fields})
    (target / "config.json").write_text(json.dumps(config))
    for loader in (lambda: _load(target), lambda: load_quantized(target)):
        with pytest.raises(CheckpointError, match=message):
            loader()


def test_unread_float_layouts_are_refused(tmp_path) -> None:
    target = tmp_path / "fp8_e5m2"
    shutil.copytree(EXPORTS / "ar_fpw8a16", target)
    config = json.loads((target / "config.json").read_text())
    config["quantization_config"]["fmt"] = "e5m2"
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="fmt"):
        load_quantized(target)
    config["quantization_config"].update(fmt="e4m3", group_size=128)  # wider than the 64-wide layers
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"q_proj: in_features=64 is not a multiple of group_size=128"):
        load_quantized(target)


@pytest.mark.parametrize("name", ["ar_mxfp8_a16", "ar_fpw8a16"])
def test_save_pretrained_round_trips(tmp_path, name) -> None:
    _, meta = _reference(name)
    model = _load(EXPORTS / name)
    model.save_pretrained(tmp_path / "again")
    again = _load(tmp_path / "again")
    assert torch.equal(_run(again, meta["input_ids"])[0], _run(model, meta["input_ids"])[0])
