"""NVFP4 (``"nv_fp"``) and FP8 E4M3 weights (``"fp"``): Intel auto-round 0.16.1's
round-to-nearest qdq bit for bit, the schemes they refuse, a model quantized and (not) saved,
and how compressed-tensors' own NVFP4 fake-quantize compares.

The fixture holds Intel's outputs (qdq and scales) on seeded float32 / bfloat16 / float16
inputs with edge rows (an all-zero group and tensor, float32 subnormals, values near the float32
maximum, a tensor so small NVFP4's global scale overflows, outliers, ties, partial and narrow
groups, FP8 block tiles with padding in both dimensions); ``scripts/intel/make_fp_fixture.py``
made it inside the separate Intel venv.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import autoround
from autoround.dtypes import DTYPES, from_groups, nv_fp, to_groups
from autoround.dtypes.fp8 import block_qdq
from autoround.errors import FormatError, SchemeError
from autoround.schemes import Scheme

FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel" / "fp_qdq.safetensors"
with safe_open(FIXTURE, "pt") as _f:
    # The fixture's MX variants (mx_fp_rceil, mx_int, ...) are test_mx_variants.py's.
    CASES = [
        c
        for c in json.loads(_f.metadata()["cases"])
        if c["dtype"] in ("nv_fp", "fp") and not c["key"].startswith("opt_rtn")  # test_nv_fp_opt_rtn.py's
    ]
TENSORS = load_file(FIXTURE)

NVFP4 = Scheme(bits=4, group_size=16, data_type="nv_fp")
FP8 = Scheme(bits=8, group_size=-1, data_type="fp")
#: Layers vLLM fuses (q/k/v, gate/up): their NVFP4 global scale is the group's.
FUSED = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
AS_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bit pattern (so -0.0 differs from 0.0 and NaN equals itself)."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.view(AS_INT[a.dtype]), b.view(AS_INT[b.dtype]))
    )


def qdq(weight: torch.Tensor, data_type: str, bits: int, group_size: int) -> tuple[torch.Tensor, object]:
    grouped, layout = to_groups(weight, group_size)
    out, qp = DTYPES[data_type].qdq(grouped, bits, True)
    return from_groups(out, layout), qp


# --- bit-identical to Intel ---


@pytest.mark.parametrize("case", CASES, ids=[c["key"] for c in CASES])
def test_qdq_and_scales_equal_intels_bit_for_bit(case: dict) -> None:
    weight = TENSORS[f"in.{case['input']}.{case['input_dtype']}"]
    if case["resolved"] == "block_fp8":
        out, scale = block_qdq(weight, tuple(case["group_size"]))
    else:
        out, qp = qdq(weight, case["dtype"], case["bits"], case["group_size"])
        # Intel returns NVFP4's E4M3 block scale (ours also keeps the effective 1/o) and FP8's scale.
        scale = qp.block_scale if case["dtype"] == "nv_fp" else qp.scale
        if case["dtype"] == "nv_fp":
            assert qp.global_scale.item() == pytest.approx(case["global_scale"], nan_ok=True, rel=0)
    assert same_bits(out, TENSORS[f"{case['key']}.qdq"])
    assert same_bits(scale, TENSORS[f"{case['key']}.scale"])


def test_the_fixture_covers_both_types_every_grouping_and_the_edges() -> None:
    resolved = {(c["resolved"], str(c["group_size"])) for c in CASES}
    assert resolved == {
        ("nv_fp4", "16"),
        ("fp8", "-1"),
        ("fp8", "0"),
        ("fp8", "32"),
        ("block_fp8", "[128, 128]"),
        ("block_fp8", "[16, 32]"),
    }
    assert {c["input_dtype"] for c in CASES} == {"float32", "bfloat16", "float16"}
    globals_ = {c["input"]: c["global_scale"] for c in CASES if c["dtype"] == "nv_fp"}
    assert globals_["zeros"] == 0 and globals_["tiny"] == float("inf"), "1/0 -> 0; 2688/1e-37 overflows"


# --- plain formulas ---

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def test_nvfp4_elements_are_e2m1_times_the_blocks_effective_scale() -> None:
    torch.manual_seed(0)
    weight = torch.randn(4, 64) * 0.05
    grouped, _ = to_groups(weight, 16)
    codes = DTYPES["nv_fp"].quantize(grouped, DTYPES["nv_fp"].qparams(grouped, 4, True), 4)
    assert torch.isin(codes.abs(), E2M1).all()
    _, qp = qdq(weight, "nv_fp", 4, 16)
    assert qp.global_scale == 448 * 6 / weight.abs().max()
    # E4M3 block scale: about gs * max|block| / 6, and the largest block maps to 448.
    assert qp.block_scale.max() == 448
    expected = qp.global_scale * grouped.abs().amax(-1, keepdim=True) / 6
    assert torch.allclose(qp.block_scale, expected, rtol=2**-4)
    assert torch.allclose(qp.scale, qp.block_scale / qp.global_scale, rtol=1e-6)


def test_fp8_scale_maps_each_rows_maximum_to_448() -> None:
    weight = torch.tensor([[1.0, -896.0, 3.0], [0.0, 0.0, 0.0]])
    out, qp = qdq(weight, "fp", 8, -1)
    assert qp.scale.flatten().tolist() == [2.0, pytest.approx(1 / (448 * 512))]
    assert out.tolist() == [[1.0, -896.0, 3.0], [0.0, 0.0, 0.0]]


# --- schemes ---


def test_both_are_tunable_and_only_nvfp4_searches_its_scale() -> None:
    # NVFP4's optimized RTN search: test_nv_fp_opt_rtn.py; Intel has none for FP8 weights.
    for name, bits, searches in (("nv_fp", (4,), True), ("fp", (8,), False)):
        dtype = DTYPES[name]
        assert dtype.allowed_bits == bits and dtype.tunable
        assert dtype.searches_scale(bits[0], True) is searches


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"data_type": "nv_fp", "bits": 8, "group_size": 16},
            r"bits=8 is not allowed for data_type 'nv_fp'; allowed: \[4\]",
        ),
        (
            {"data_type": "nv_fp", "bits": 4, "group_size": 32},
            r"group_size=32 is not allowed for data_type 'nv_fp'.*allowed: 16",
        ),
        (
            {"data_type": "nv_fp", "bits": 4, "group_size": 16, "sym": False},
            r"sym=False is not allowed for data_type 'nv_fp'",
        ),
        ({"data_type": "fp", "bits": 4}, r"bits=4 is not allowed for data_type 'fp'; allowed: \[8\]"),
        ({"data_type": "fp", "bits": 8, "sym": False}, r"sym=False is not allowed for data_type 'fp'"),
    ],
)
def test_schemes_they_cannot_take_are_refused_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(SchemeError, match=message):
        Scheme(**fields)


def test_fp8_takes_any_integer_grouping_and_fp_still_names_a_16_bit_layer() -> None:
    for group in (-1, 0, 32, 128):
        assert Scheme(bits=8, group_size=group, data_type="fp").is_quantized
    assert not Scheme(bits=16, data_type="fp").is_quantized


# --- a model ---


@pytest.mark.parametrize(("scheme", "bits", "group"), [(NVFP4, 4, 16), (FP8, 8, -1)], ids=["nv_fp", "fp"])
def test_rtn_quantizes_every_layer_to_the_dtypes_qdq(
    tiny_llama, scheme: Scheme, bits: int, group: int
) -> None:
    before = {
        n: m.weight.detach().clone() for n, m in tiny_llama.named_modules() if isinstance(m, torch.nn.Linear)
    }
    qm = autoround.quantize(tiny_llama, scheme, progress=False)
    assert qm.layers and set(qm.layers) <= set(before)
    for name, quant in qm.layers.items():
        if scheme.data_type == "nv_fp" and name.rpartition(".")[2] in FUSED:
            continue  # one global scale per fused group: tests/core/algorithms/test_fused_scales.py
        expected, qp = qdq(before[name], scheme.data_type, bits, group)
        assert same_bits(tiny_llama.get_submodule(name).weight.detach(), expected), name
        assert torch.equal(quant.scale.flatten(), qp.scale.flatten()) and not quant.zero.any()


@pytest.mark.parametrize("scheme", [NVFP4, FP8], ids=["nv_fp", "fp"])
def test_saving_in_an_integer_only_format_is_refused_before_anything_is_written(
    tmp_path, tiny_llama, scheme: Scheme
) -> None:
    qm = autoround.quantize(tiny_llama, scheme, progress=False)
    with pytest.raises(
        (FormatError, SchemeError), match=rf"(?s){scheme.data_type} {scheme.bits}-bit.*'auto_gptq'"
    ):
        autoround.save(qm, tmp_path / "out", format="auto_gptq")
    assert list(tmp_path.iterdir()) == []


# --- compressed-tensors ---


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_compressed_tensors_nvfp4_fake_quantize_agrees_up_to_its_scale_conventions(
    dtype: torch.dtype,
) -> None:
    """compressed-tensors (0.19) ``NVFP4A16`` weights, its own ``generate_gparam``,
    ``calculate_qparams`` and ``fake_quantize``, against ours (= Intel's) on the same weight.

    float32: the same global scale (448 * 6 / max|W|) and the same E4M3 block scales, so the same
    E2M1 codes; the results differ by at most one float32 ulp, because compressed-tensors
    dequantizes with ``s / gs`` and Intel with ``1 / (1 / (s * (1 / gs)))``.
    bfloat16: compressed-tensors computes the global scale in the weight's dtype (rounded to
    bfloat16), Intel in float32, so block scales and some codes differ. (It also clamps a zero
    maximum to float32's tiny and replaces an infinite global scale by 1; Intel gives 0 and inf.)
    """
    ct = pytest.importorskip("compressed_tensors.quantization")
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils.helpers import calculate_qparams, generate_gparam

    args = ct.quant_scheme.NVFP4A16["weights"]
    torch.manual_seed(0)
    weight = (torch.randn(16, 64) * 0.05).to(dtype)
    blocks = weight.reshape(16, -1, 16)
    gs = generate_gparam(weight.amin(), weight.amax())
    scale, zero = calculate_qparams(blocks.amin(-1), blocks.amax(-1), args, global_scale=gs)
    theirs = fake_quantize(weight, scale, zero, args, global_scale=gs)
    ours, qp = qdq(weight, "nv_fp", 4, 16)
    if dtype == torch.float32:
        assert gs.item() == qp.global_scale.item()
        assert torch.equal(scale.float().flatten(), qp.block_scale.flatten())
        ulps = (theirs.view(torch.int32) - ours.view(torch.int32)).abs()
        assert ulps.max() <= 1 and (ulps == 1).any()
    else:
        assert gs.item() != qp.global_scale.item() and gs.item() == qp.global_scale.to(dtype).item()
        assert not torch.equal(scale.float().flatten(), qp.block_scale.flatten())


def _intel_cast_to_fp4(x: torch.Tensor) -> torch.Tensor:
    """Intel 0.16.1's ``cast_to_fp4`` written out in plain torch: the three roundings under masks."""
    sign = torch.sign(x)
    x = torch.abs(x)
    halves = (2.0 * x).round() / 2.0
    ones = x.round()
    twos = 2.0 * (x / 2.0).round()
    below2, below4 = x < 2.0, x < 4.0
    x = halves * below2 + ones * (~below2) * below4 + twos * (~below2) * (~below4)
    return x.clamp(-6.0, 6.0) * sign


def test_e2m1_rounding_is_intels_cast_to_fp4_on_every_tie_edge_and_beyond_the_range() -> None:
    grid = torch.arange(-8.0, 8.0, 0.125)  # every tie, grid value and binade edge of E2M1, and past +-6
    nudged = torch.cat([grid, torch.nextafter(grid, grid + 1), torch.nextafter(grid, grid - 1)])
    values = torch.cat([nudged, torch.tensor([0.0, -0.0, 1e-30, -1e-30, 100.0, -100.0])])
    values = torch.cat([values, torch.randn(10_000) * 3])
    assert torch.equal(nv_fp.e2m1(values), _intel_cast_to_fp4(values))
    # -0.0 stays -0.0 (the sign multiplies the rounded magnitude)
    assert torch.equal(torch.signbit(nv_fp.e2m1(values)), torch.signbit(_intel_cast_to_fp4(values)))
