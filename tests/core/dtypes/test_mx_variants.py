"""MX types beyond plain ``mx_fp``: ``mx_fp_rceil`` (the shared exponent rounded up, so the
group maximum is never clipped: Intel's MXFP4_RCEIL / MXFP8_RCEIL activations), ``mx_int``
(MXINT2/4/8: fixed-point elements, Intel's MXINT4) and the single-element ``mx_fp6e3m2`` /
``mx_fp8e5m2``. Each is Intel auto-round 0.16.1's round-to-nearest bit for bit (its outputs in
``fp_qdq.safetensors``, made by ``scripts/intel/make_fp_fixture.py`` in the Intel venv), and
equal to the OCP MX specification's formula written out here in float64 on random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import autoround
from autoround.dtypes import DTYPES, from_groups, to_groups
from autoround.errors import FormatError, SchemeError
from autoround.formats.preflight import check_schemes
from autoround.schemes import Scheme

FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel" / "fp_qdq.safetensors"
MX_TYPES = ("mx_fp_rceil", "mx_int", "mx_fp6e3m2", "mx_fp8e5m2")
with safe_open(FIXTURE, "pt") as _f:
    # Plain RTN cases (opt_rtn_* are test_mx_opt_rtn.py's).
    CASES = [
        c
        for c in json.loads(_f.metadata()["cases"])
        if c["dtype"] in MX_TYPES and not c["key"].startswith("opt_rtn")
    ]
TENSORS = load_file(FIXTURE)
AS_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bit pattern (so -0.0 differs from 0.0)."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.view(AS_INT[a.dtype]), b.view(AS_INT[b.dtype]))
    )


def qdq(weight: torch.Tensor, data_type: str, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The data type's qdq of a (out, in) weight in groups of 32, and its scale (groups, 1)."""
    grouped, layout = to_groups(weight, 32)
    out, qp = DTYPES[data_type].qdq(grouped, bits, True)
    return from_groups(out, layout), qp.scale


# --- bit-identical to Intel ---


@pytest.mark.parametrize("case", CASES, ids=[c["key"] for c in CASES])
def test_qdq_and_shared_scale_equal_intels_bit_for_bit(case: dict) -> None:
    out, scale = qdq(TENSORS[f"in.{case['input']}.{case['input_dtype']}"], case["dtype"], case["bits"])
    assert same_bits(out, TENSORS[f"{case['key']}.qdq"])
    # Intel returns the E8M0 exponent (in the input's dtype); our scale is 2**exponent in float32.
    assert torch.equal(scale, torch.exp2(TENSORS[f"{case['key']}.scale"].float()))


def test_the_fixture_covers_every_variant_bit_width_and_input() -> None:
    resolved = {(c["dtype"], c["bits"]): c["resolved"] for c in CASES}
    assert resolved == {
        ("mx_fp_rceil", 4): "mx_fp_rceil",
        ("mx_fp_rceil", 6): "mx_fp_rceil",
        ("mx_fp_rceil", 8): "mx_fp_rceil",
        ("mx_int", 2): "mx_int2",
        ("mx_int", 4): "mx_int4",
        ("mx_int", 8): "mx_int8",
        ("mx_fp6e3m2", 6): "mx_fp6e3m2",
        ("mx_fp8e5m2", 8): "mx_fp8e5m2",
    }
    assert {(c["input"], c["input_dtype"]) for c in CASES if c["dtype"] == "mx_int"} == {
        (n, d) for n in ("edges", "partial", "narrow") for d in ("float32", "bfloat16")
    }
    rceil = TENSORS["mx_fp_rceil.bits4.edges.float32.scale"]
    assert rceil.min() == -127 and rceil.max() >= 125, "E8M0 clamp and top reached"


# --- the OCP MX formulas, written out ---

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
# E3M2 (bias 3): subnormals m/4 * 2**-2, normals (1 + m/4) * 2**(e-3), e = 1..7 (no NaN codes).
E3M2 = [m / 4 * 2**-2 for m in range(4)] + [
    (1 + m / 4) * 2.0 ** (e - 3) for e in range(1, 8) for m in range(4)
]


def grid_qdq(weight: torch.Tensor, grid: list[float], exponent) -> torch.Tensor:
    """Per group of 32 in float64: scale ``2**exponent(max|w|)`` clamped to 2**+-127; each
    |w| / scale to the nearest grid value, ties to the even grid index (even mantissa / even
    integer), clipped to the top one; the sign kept."""
    levels = torch.tensor(grid, dtype=torch.float64)
    odd = (torch.arange(len(grid)) % 2).double()
    out = torch.empty(weight.shape, dtype=torch.float64)
    for r in range(weight.shape[0]):
        for start in range(0, weight.shape[1], 32):
            g = weight[r, start : start + 32].double()
            scale = 2.0 ** max(-127, min(127, exponent(g.abs().max().item())))
            distance = ((g.abs() / scale).clamp(max=levels[-1])[:, None] - levels).abs()
            nearest = distance == distance.min(dim=1, keepdim=True).values
            pick = torch.where(nearest, odd, 2.0).argmin(dim=1)
            out[r, start : start + 32] = torch.where(g < 0, -levels[pick], levels[pick]) * scale
    return out


def log2(x: float) -> float:
    return torch.log2(torch.tensor(x, dtype=torch.float64)).item()


def rceil(top: float):
    """OCP / NVIDIA ``rceil``: the smallest power of two with max|w| / scale <= top."""
    return lambda amax: int(torch.tensor(log2(amax / top)).ceil().item()) if amax else 1


def floor_minus(emax: int):
    """The OCP spec's default: ``floor(log2 max|w|) - emax``."""
    return lambda amax: int(torch.tensor(log2(amax)).floor().item()) - emax if amax else 1 - emax


def integers(bits: int) -> list[float]:
    """MXINT elements: k / 2**(bits-2) for k = 0 .. 2**(bits-1) - 1."""
    return [k / 2 ** (bits - 2) for k in range(2 ** (bits - 1))]


@pytest.mark.parametrize(
    ("data_type", "bits", "grid", "exponent"),
    [
        ("mx_fp_rceil", 4, E2M1, rceil(6.0)),
        ("mx_fp6e3m2", 6, E3M2, floor_minus(4)),
        ("mx_int", 8, integers(8), floor_minus(0)),
        ("mx_int", 4, integers(4), floor_minus(0)),
        ("mx_int", 2, integers(2), floor_minus(0)),
    ],
    ids=["rceil-E2M1", "E3M2", "MXINT8", "MXINT4", "MXINT2"],
)
@pytest.mark.parametrize("magnitude", [1e-3, 1.0, 300.0])
def test_qdq_equals_the_ocp_formula(
    data_type: str, bits: int, grid: list[float], exponent, magnitude: float
) -> None:
    torch.manual_seed(bits)
    weight = torch.randn(6, 96) * magnitude
    weight[0, :32] = 0.0  # an all-zero group
    weight[1, 32:64] = -weight[1, 32:64].abs()
    out, _ = qdq(weight, data_type, bits)
    assert torch.equal(out.double(), grid_qdq(weight, grid, exponent))


def test_rceil_never_clips_the_group_maximum_where_floor_does() -> None:
    # max 7.9: floor takes 2**(2 - 2) = 1 and clips 7.9 to 6; rceil takes 2**ceil(log2(7.9 / 6))
    # = 2, and 7.9 / 2 = 3.95 rounds to 4: 8.
    weight = torch.tensor([[7.9] + [0.0] * 31])
    assert qdq(weight, "mx_fp", 4)[0][0, 0] == 6.0
    assert qdq(weight, "mx_fp_rceil", 4)[0][0, 0] == 8.0


# --- schemes ---


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"data_type": "mx_int", "bits": 3},
            r"bits=3 is not allowed for data_type 'mx_int'; allowed: \[2, 4, 8\]",
        ),
        ({"data_type": "mx_int", "bits": 4, "group_size": 16}, r"group_size=16 .*'mx_int'.*allowed: 32"),
        (
            {"data_type": "mx_fp_rceil", "bits": 4, "sym": False},
            r"sym=False is not allowed for data_type 'mx_fp_rceil'",
        ),
        ({"data_type": "mx_fp6e3m2", "bits": 4}, r"bits=4 .*'mx_fp6e3m2'; allowed: \[6\]"),
        ({"data_type": "mx_fp8e5m2", "bits": 6}, r"bits=6 .*'mx_fp8e5m2'; allowed: \[8\]"),
    ],
)
def test_schemes_the_variants_cannot_take_are_refused_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(SchemeError, match=message):
        Scheme(group_size=fields.pop("group_size", 32), **fields)


def test_the_variants_are_tunable_without_a_scale_search() -> None:
    # the tuning step: test_float_tuning.py; optimized RTN falls back to plain RTN for them
    for name in MX_TYPES:
        assert DTYPES[name].tunable and not DTYPES[name].searches_scale(DTYPES[name].allowed_bits[0], True)


# --- no format stores them yet (mx_int 4-bit, MXINT4: auto_round only): refused before any work ---


@pytest.mark.parametrize(
    "scheme",
    [
        Scheme(bits=8, group_size=32, data_type="mx_int"),
        Scheme(bits=8, group_size=32, data_type="mx_fp8e5m2"),
        Scheme(bits=6, group_size=32, data_type="mx_fp6e3m2"),
    ],
    ids=lambda s: s.data_type,
)
@pytest.mark.parametrize("format_", ["auto_round", "llm_compressor", "auto_gptq"])
def test_every_format_refuses_them_naming_the_data_type_and_the_formats_that_can(
    scheme: Scheme, format_: str
) -> None:
    message = (
        rf"{scheme.data_type} {scheme.bits}-bit.*cannot be stored in format '{format_}'.*can store it: \[\]"
    )
    with pytest.raises(SchemeError, match=message):
        check_schemes(scheme, None, format_)


def test_a_model_plan_of_them_is_refused_before_saving_writes_anything(tmp_path, tiny_llama) -> None:
    scheme = Scheme(bits=8, group_size=32, data_type="mx_int")
    qm = autoround.quantize(tiny_llama, scheme, progress=False)
    with pytest.raises((FormatError, SchemeError), match=r"(?s)mx_int.*'auto_round'"):
        autoround.save(qm, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
