"""Dynamic MX activations in the ``auto_round`` format (Intel's ``MXFP4`` / ``MXFP8`` presets and
their ``_RCEIL`` forms: W4A4 / W8A8; ``MXINT4`` W4A4; activations quantized per block of 32 on
every forward), and MXINT4's weight-only form, written as Intel auto-round 0.16.1 writes them and
read back.

References: Intel's RTN exports of the tiny dense Llama (tests/fixtures/intel/exports/
ar_mxfp4_w4a4, ar_mxfp8_w8a8, ar_mxfp4_rceil, ar_mxfp8_rceil, ar_mxint4, ar_mxint4_w4a16;
scripts/intel/make_dynamic_act_exports.py) with the logits and greedy tokens of Intel's in-memory
model (its ``WrapperWALayer`` quantizing each layer's input) and of Intel's own loader
(``MXFP4QuantLinear`` / ``MXFP8QuantLinear`` / ``MXINT4QuantLinear``; it fails on its weight-only
MXINT4 export, recorded). Our RTN of the same model saved in ``auto_round`` equals Intel's export
tensor for tensor and key for key; the export loaded by ``load_quantized`` gives Intel's logits
and tokens, and the inputs are quantized (weight-only logits differ).

Intel's ``auto_round`` export refuses FP8 per-token dynamic activations (fixture
ar_fp8_dynamic holds its refusal); so does our preflight.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from autoround import quantize, save
from autoround.errors import CheckpointError, FormatError, SchemeError
from autoround.formats.auto_round import parse_config
from autoround.formats.preflight import check_schemes
from autoround.io import load_safetensors_dir
from autoround.loading import load_quantized
from autoround.nn import FloatQuantLinear
from autoround.nn.float_weights import dequantize
from autoround.schemes import parse_scheme

FIXTURES = Path(__file__).parents[2] / "fixtures" / "intel"
EXPORTS = FIXTURES / "exports"
#: Intel's fixture -> our preset (Intel's call) and the activation kind of its layers.
CASES: dict[str, tuple[str, str]] = {
    "ar_mxfp4_w4a4": ("MXFP4", "mxfp4"),
    "ar_mxfp8_w8a8": ("MXFP8", "mxfp8"),
    "ar_mxfp4_rceil": ("MXFP4_RCEIL", "mxfp4_rceil"),
    "ar_mxfp8_rceil": ("MXFP8_RCEIL", "mxfp8_rceil"),
    "ar_mxint4": ("MXINT4", "mxint4"),
}
#: Intel's weight-only fixtures (the preset with ``act_bits=16``) -> our preset.
WEIGHT_ONLY = {"ar_mxint4_w4a16": "MXINT4"}
#: Fixtures whose Intel loader quantizes the inputs as MXFP4 (its ``MXINT4QuantLinear`` calls
#: ``quant_mx`` without the data type, which then falls back to ``mx_fp<bits>``): its in-memory
#: model, which quantizes them as MXINT4 as the config says, is the reference.
INTEL_LOADER_MXFP4_INPUTS = ("ar_mxint4",)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    made: dict[str, Path] = {}

    def make(case: str) -> Path:
        if case not in made:
            model = AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny_llama_dense", dtype=torch.bfloat16)
            preset, extra = (CASES[case][0], {}) if case in CASES else (WEIGHT_ONLY[case], {"act_bits": 16})
            qm = quantize(model, preset, progress=False, **extra)
            made[case] = save(qm, tmp_path_factory.mktemp(case) / "ckpt", format="auto_round")
        return made[case]

    return make


@pytest.mark.parametrize("case", [*CASES, *WEIGHT_ONLY])
def test_tensors_equal_intels_export(case, saved) -> None:
    mine, theirs = load_safetensors_dir(saved(case)), load_safetensors_dir(EXPORTS / case)
    assert sorted(mine) == sorted(theirs)
    for name, tensor in theirs.items():
        assert (mine[name].dtype, mine[name].shape) == (tensor.dtype, tensor.shape), name
        if tensor.element_size() == 1 and tensor.is_floating_point():  # float8: compare bytes
            assert torch.equal(mine[name].view(torch.uint8), tensor.view(torch.uint8)), name
        else:
            assert torch.equal(mine[name], tensor), name


@pytest.mark.parametrize("case", [*CASES, *WEIGHT_ONLY])
def test_config_equals_intels_key_for_key(case, saved) -> None:
    path = saved(case)
    for file in ("config.json", "quantization_config.json"):
        mine, theirs = (json.loads((d / file).read_text()) for d in (path, EXPORTS / case))
        if file == "config.json":
            for key in ("dtype", "tie_word_embeddings", "architectures"):
                assert mine.get(key) == theirs.get(key), key
            mine, theirs = mine["quantization_config"], theirs["quantization_config"]
        assert mine.pop("autoround_version") and theirs.pop("autoround_version")
        assert mine == theirs, file
    if case in CASES:
        assert theirs["act_dynamic"] is True and theirs["act_group_size"] == 32
    else:
        assert "act_bits" not in theirs


def _logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("case", list(CASES))
def test_intels_export_loads_with_the_logits_and_tokens_of_intels_models(case) -> None:
    """Intel's in-memory model and its loader agree here (float32, the same qdq of weights and
    inputs), and so does ours: within 1e-5, as the other Intel float logits (bit-identical on
    the AVX512 CPU the fixture was made on; another ISA sums in another order)."""
    meta = json.loads((EXPORTS / case / "reference.json").read_text())
    reference = load_file(EXPORTS / case / "reference.safetensors")
    loaded = load_quantized(EXPORTS / case, dtype=torch.float32)
    layers = [m for m in loaded.modules() if isinstance(m, FloatQuantLinear)]
    assert len(layers) == 14 and {m.act_kind for m in layers} == {CASES[case][1]}
    assert all(not m.input_tensors for m in layers)  # dynamic: nothing stored
    logits = _logits(loaded, meta["input_ids"])
    for which in ("in_memory", "loaded") if case not in INTEL_LOADER_MXFP4_INPUTS else ("in_memory",):
        torch.testing.assert_close(logits, reference[f"{which}_logits"], rtol=0, atol=1e-5)
    ids = torch.tensor([meta["input_ids"]])
    with torch.no_grad():
        out = loaded.generate(
            ids, max_new_tokens=meta["new_tokens"], min_new_tokens=meta["new_tokens"], do_sample=False
        )
    assert out[0, ids.shape[1] :].tolist() == reference["in_memory_greedy"].tolist()
    for layer in layers:  # the same weights with the inputs left as they are give other logits
        layer.act_kind = None
    assert (_logits(loaded, meta["input_ids"]) - logits).abs().max() > 1e-3


def test_intels_mxint4_loader_quantizes_the_inputs_as_mxfp4() -> None:
    """Why Intel's loaded logits are not the reference for ``ar_mxint4``: our layers with their
    inputs quantized as MXFP4 instead give exactly Intel's loader's logits, so the weights agree and
    only its input quantization departs from the checkpoint's ``act_data_type: mx_int``."""
    meta = json.loads((EXPORTS / "ar_mxint4" / "reference.json").read_text())
    reference = load_file(EXPORTS / "ar_mxint4" / "reference.safetensors")
    assert meta["intel_layer_class"].endswith("MXINT4QuantLinear")
    loaded = load_quantized(EXPORTS / "ar_mxint4", dtype=torch.float32)
    gap = (reference["loaded_logits"] - reference["in_memory_logits"]).abs().max()
    assert gap > 1e-2
    for layer in loaded.modules():
        if isinstance(layer, FloatQuantLinear):
            layer.act_kind = "mxfp4"
    torch.testing.assert_close(
        _logits(loaded, meta["input_ids"]), reference["loaded_logits"], rtol=0, atol=1e-5
    )


def test_intels_weight_only_mxint4_export_loads_with_the_logits_of_intels_model() -> None:
    """Intel's loader fails on this export (its record); ours reads it into layers that leave the
    input as it is and gives the in-memory model's logits and tokens."""
    meta = json.loads((EXPORTS / "ar_mxint4_w4a16" / "reference.json").read_text())
    assert "intel_load_error" in meta
    reference = load_file(EXPORTS / "ar_mxint4_w4a16" / "reference.safetensors")
    loaded = load_quantized(EXPORTS / "ar_mxint4_w4a16", dtype=torch.float32)
    layers = [m for m in loaded.modules() if isinstance(m, FloatQuantLinear)]
    assert len(layers) == 14 and {(m.layout.kind, m.act_kind) for m in layers} == {("mxint4", None)}
    torch.testing.assert_close(
        _logits(loaded, meta["input_ids"]), reference["in_memory_logits"], rtol=0, atol=1e-5
    )
    ids = torch.tensor([meta["input_ids"]])
    with torch.no_grad():
        out = loaded.generate(
            ids, max_new_tokens=meta["new_tokens"], min_new_tokens=meta["new_tokens"], do_sample=False
        )
    assert out[0, ids.shape[1] :].tolist() == reference["in_memory_greedy"].tolist()


def test_mxint4_codes_are_sign_magnitude_quarters_low_nibble_first() -> None:
    """The MXINT4 bytes by hand: byte ``0x9F`` holds the codes 0xF (first column: sign set, 7 / 4
    = 1.75) and 0x9 (second: sign set, 1 / 4), byte ``0x08`` -0.0 then 0; scale byte 129 is 2**2."""
    packed = torch.tensor([[0x9F, 0x08] * 16], dtype=torch.uint8)
    scale = torch.tensor([[129, 129]], dtype=torch.uint8)  # 64 columns: two blocks of 32
    weight = dequantize("mxint4", {"weight_packed": packed, "weight_scale": scale})
    assert torch.equal(weight, torch.tensor([[-7.0, -1.0, 0.0, 0.0] * 16]))
    assert torch.signbit(weight[0, 2]) and not torch.signbit(weight[0, 3])


@pytest.mark.parametrize("bits", [2, 8])
def test_other_mx_int_widths_are_refused_naming_what_is_written(bits) -> None:
    """Intel's integer MX export packs 4 bits only ("Only 4 bits are supported."): so do we."""
    scheme = parse_scheme("MXINT4", act_bits=16).replace(bits=bits)
    with pytest.raises(
        (SchemeError, NotImplementedError), match=rf"mx_int {bits}-bit.*mx_int 4-bit group 32"
    ):
        check_schemes(scheme, None, "auto_round")


def test_mx_int_beside_other_float_layers_is_refused(tmp_path) -> None:
    """Intel names one packing a checkpoint: ``auto_round`` for MXINT4, ``auto_round:llm_compressor``
    for MXFP4; a layer of the other type cannot be described."""
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny_llama_dense", dtype=torch.bfloat16)
    layer = "model.layers.0.mlp.down_proj"
    qm = quantize(model, "MXINT4", act_bits=16, progress=False, layer_config={layer: {"data_type": "mx_fp"}})
    with pytest.raises(FormatError, match=f"{layer}: mx_fp 4-bit, mx_fp beside mx_int layers"):
        save(qm, tmp_path / "out", format="auto_round")
    assert not (tmp_path / "out").exists()


def test_the_input_is_quantized_per_block_of_32_as_plain_torch_computes_it() -> None:
    """MXFP8 (E4M3 elements, floor exponent) by hand: per block of 32, the shared scale
    ``2 ** (floor(log2(max|x|)) - 8)`` (E4M3's largest exponent), elements rounded to E4M3."""
    layer = FloatQuantLinear(64, 8, parse_scheme("MXFP8"), device="cpu", scale_dtype=torch.float32)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(0)) * 5
    blocks = x.reshape(3, 2, 32)
    scale = torch.exp2(torch.floor(torch.log2(blocks.abs().amax(-1, keepdim=True))) - 8)
    expected = (blocks / scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() * scale
    assert torch.equal(layer.quantize_input(x), expected.reshape(3, 64))


def test_fp8_per_token_dynamic_activations_are_refused_as_intel_refuses_them() -> None:
    record = json.loads((EXPORTS / "ar_fp8_dynamic" / "reference.json").read_text())
    assert "does not support exporting" in record["intel_export_error"]
    with pytest.raises(NotImplementedError, match=r"activation quantization .* \['llm_compressor'\]"):
        check_schemes(parse_scheme("FP8_STATIC", act_dynamic=True, act_group_size=-1), None, "auto_round")


def test_a_config_with_dynamic_fp8_activations_is_a_checkpoint_error(tmp_path) -> None:
    config = json.loads((EXPORTS / "ar_fpw8a16" / "config.json").read_text())
    quant = config["quantization_config"]
    quant.update(act_bits=8, act_data_type="fp", act_group_size=-1, act_dynamic=True, act_sym=True)
    with pytest.raises(CheckpointError, match="act_bits=8"):
        parse_config(quant)
