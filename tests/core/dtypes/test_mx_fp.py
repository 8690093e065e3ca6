"""MX floats (``"mx_fp"``): Intel auto-round 0.16.1's round-to-nearest qdq bit for bit, a plain
grid formula written out here, the schemes it refuses, and a model quantized and (not) saved.

The fixture holds Intel's outputs on seeded inputs with edge rows (zeros, float32 subnormals,
values near the float32 maximum, negatives, a repeated value, rounding ties);
``scripts/intel/make_mx_fp_fixture.py`` made it inside the separate Intel venv.
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
from autoround.dtypes.mx_elements import half_to_even
from autoround.errors import FormatError, SchemeError
from autoround.formats.preflight import check_plan
from autoround.layer_plan import resolve
from autoround.schemes import Scheme, preset

MX = DTYPES["mx_fp"]
FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel" / "mx_fp_qdq.safetensors"
with safe_open(FIXTURE, "pt") as _f:
    CASES = json.loads(_f.metadata()["cases"])
TENSORS = load_file(FIXTURE)

MXFP4 = Scheme(bits=4, group_size=32, data_type="mx_fp")


def grouped_qdq(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The data type's qdq of a (out, in) weight in groups of 32, and its scale (groups, 1)."""
    grouped, layout = to_groups(weight, 32)
    qdq, qp = MX.qdq(grouped, bits, True)
    return from_groups(qdq, layout), qp.scale


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bit pattern (so -0.0 differs from 0.0)."""
    as_int = {torch.float32: torch.int32, torch.bfloat16: torch.int16}[a.dtype]
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(as_int), b.view(as_int))


# --- bit-identical to Intel ---


@pytest.mark.parametrize("case", CASES, ids=[c["key"] for c in CASES])
def test_qdq_and_shared_scale_equal_intels_bit_for_bit(case: dict) -> None:
    bits, (_, name, dtype) = case["bits"], case["key"].split(".")
    qdq, scale = grouped_qdq(TENSORS[f"in.{name}.{dtype}"], bits)
    assert same_bits(qdq, TENSORS[f"{case['key']}.qdq"])
    # Intel returns the E8M0 exponent; our scale is 2**exponent in float32.
    exponent = TENSORS[f"{case['key']}.shared_exp"].float()
    assert scale.dtype == torch.float32 and torch.equal(scale, torch.exp2(exponent))


def test_the_fixture_covers_every_bit_width_both_dtypes_and_the_edge_rows() -> None:
    keys = {c["key"] for c in CASES}
    assert keys == {
        f"mx_fp{b}.{n}.{d}"
        for b in (4, 6, 8)
        for n in ("edges", "partial", "narrow")
        for d in ("float32", "bfloat16")
    }
    edges = TENSORS["in.edges.float32"]
    assert edges[3].eq(0).all() and edges[7].unique().numel() == 1 and (edges[6] < 0).all()
    assert edges[4].abs().max() < 1e-35 and edges[5].abs().max() > 1e38
    exponents = TENSORS["mx_fp4.edges.float32.shared_exp"]
    assert exponents.min() == -127 and exponents.max() >= 125, "E8M0 clamp and top reached"


# --- a plain grid formula ---

E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# E4M3 (bias 7): subnormals m/8 * 2**-6, normals (1 + m/8) * 2**(e-7); e=15, m=7 is NaN.
E4M3 = tuple(
    [m / 8 * 2**-6 for m in range(8)]
    + [(1 + m / 8) * 2.0 ** (e - 7) for e in range(1, 16) for m in range(8)][:-1]
)


def reference_qdq(weight: torch.Tensor, grid: tuple[float, ...]) -> torch.Tensor:
    """Per group of 32, in float64: scale = 2**(floor(log2 max|w|) - emax) (emax the top grid
    value's exponent; 2**(1 - emax) for an all-zero group); each |w| / scale goes to the nearest
    grid value, ties to the even grid index (the even mantissa), clipped to the top one.

    Exact rounding: it differs from Intel's float32 ``floor(m + 0.5)`` only at the single
    value just below the first tie, which the Intel fixture covers.
    """
    levels = torch.tensor(grid, dtype=torch.float64)
    emax = int(torch.floor(torch.log2(levels[-1])))
    odd = (torch.arange(len(grid)) % 2).double()
    out = torch.empty(weight.shape, dtype=torch.float64)
    for r in range(weight.shape[0]):
        for start in range(0, weight.shape[1], 32):
            g = weight[r, start : start + 32].double()
            amax = g.abs().max().item()
            exp = (torch.floor(torch.log2(torch.tensor(amax))).item() if amax else 1) - emax
            scale = 2.0 ** max(-127, min(127, exp))
            distance = ((g.abs() / scale).clamp(max=levels[-1])[:, None] - levels).abs()
            nearest = distance == distance.min(dim=1, keepdim=True).values
            pick = torch.where(nearest, odd, 2.0).argmin(dim=1)
            out[r, start : start + 32] = torch.where(g < 0, -levels[pick], levels[pick]) * scale
    return out


@pytest.mark.parametrize(("bits", "grid"), [(4, E2M1), (8, E4M3)], ids=["E2M1", "E4M3"])
@pytest.mark.parametrize("magnitude", [1e-3, 1.0, 300.0])
def test_qdq_matches_the_grid_times_a_power_of_two(
    bits: int, grid: tuple[float, ...], magnitude: float
) -> None:
    torch.manual_seed(bits)
    weight = torch.randn(6, 96) * magnitude
    weight[0, :32] = 0.0  # an all-zero group
    weight[1, 32:64] = -weight[1, 32:64].abs()
    qdq, scale = grouped_qdq(weight, bits)
    assert torch.equal(qdq.double(), reference_qdq(weight, grid))
    assert torch.equal(scale, torch.exp2(torch.log2(scale).round())), "powers of two"


def test_ties_round_to_the_even_mantissa() -> None:
    # Group max 6 -> scale 1: 0.25 (0|0.5) -> 0, 0.75 (0.5|1) -> 1, 2.5 (2|3) -> 2, 5 (4|6) -> 4.
    weight = torch.tensor([[6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0] * 4])
    qdq, _ = grouped_qdq(weight, 4)
    assert qdq[0, :8].tolist() == [6.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]


# --- schemes ---


def test_mx_fp_is_tunable_and_searches_its_scale_in_optimized_rtn() -> None:
    # the search: test_mx_opt_rtn.py; the tuning step: test_float_tuning.py
    assert MX.allowed_bits == (4, 6, 8) and MX.tunable and MX.searches_scale(4, True)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"bits": 3}, r"bits=3 is not allowed for data_type 'mx_fp'; allowed: \[4, 6, 8\]"),
        ({"bits": 4, "group_size": 64}, r"group_size=64 is not allowed for data_type 'mx_fp'.*allowed: 32"),
        ({"bits": 4, "group_size": 128}, r"group_size=128 is not allowed"),
        ({"bits": 4, "group_size": -1}, r"group_size=-1 is not allowed"),
        ({"bits": 8, "group_size": 32, "sym": False}, r"sym=False is not allowed for data_type 'mx_fp'"),
    ],
)
def test_schemes_mx_cannot_take_are_refused_naming_the_field(fields: dict, message: str) -> None:
    with pytest.raises(SchemeError, match=message):
        Scheme(data_type="mx_fp", **fields)


def test_a_16_bit_override_of_an_mx_scheme_keeps_the_layer_unquantized() -> None:
    assert not MXFP4.replace(bits=16).is_quantized
    with pytest.raises(SchemeError, match="group_size=128"):
        preset("W4A16").replace(data_type="mx_fp")


# --- a model ---


def test_rtn_quantizes_every_layer_to_the_dtypes_qdq(tiny_llama) -> None:
    before = {
        n: m.weight.detach().clone() for n, m in tiny_llama.named_modules() if isinstance(m, torch.nn.Linear)
    }
    qm = autoround.quantize(tiny_llama, MXFP4, progress=False)
    assert qm.layers and set(qm.layers) <= set(before)
    for name, quant in qm.layers.items():
        weight = tiny_llama.get_submodule(name).weight.detach()
        expected, scale = grouped_qdq(before[name], 4)
        assert same_bits(weight, expected), name
        assert torch.equal(quant.scale, scale.reshape(weight.shape[0], -1)) and not quant.zero.any()


# MXFP4 and MXFP8 are stored (tests/core/formats/test_*_float.py); MXFP6 by no format
MXFP6 = Scheme(bits=6, group_size=32, data_type="mx_fp")


def test_the_auto_round_format_preflight_refuses_an_mxfp6_plan(tiny_llama) -> None:
    with pytest.raises(SchemeError, match=r"mx_fp 6-bit.*cannot be stored in format 'auto_round'"):
        check_plan(tiny_llama, resolve(tiny_llama, MXFP6), "auto_round")


def test_saving_an_mxfp6_model_is_refused_before_anything_is_written(tmp_path, tiny_llama) -> None:
    qm = autoround.quantize(tiny_llama, MXFP6, progress=False)
    with pytest.raises((FormatError, SchemeError), match=r"(?s)mx_fp.*'auto_round'"):
        autoround.save(qm, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def _intel_half_to_even(m: torch.Tensor) -> torch.Tensor:
    """Intel 0.16.1's element rounding of magnitudes (``quant_element``): ``floor(m + 0.5)``,
    less one where ``m - 0.5`` is an even integer."""
    return torch.floor(m + 0.5) - (torch.remainder(m - 0.5, 2) == 0).to(m.dtype)


def test_half_to_even_is_intels_rounding_on_every_float_near_one_half_and_around_every_tie() -> None:
    low, high = (torch.tensor(v).view(torch.int32).item() for v in (0.2, 0.6))
    every_float = torch.arange(low, high, dtype=torch.int32).view(torch.float32)
    halves = torch.arange(0.0, 128.0, 0.5)
    up, down = halves.clone(), halves.clone()
    around = [halves]
    for _ in range(3):
        up, down = torch.nextafter(up, up + 1), torch.nextafter(down, down - 1).clamp(min=0)
        around += [up, down]
    torch.manual_seed(0)
    m = torch.cat([every_float, *around, torch.rand(1_000_000) * 64])
    assert torch.equal(half_to_even(m), _intel_half_to_even(m))
    assert half_to_even(torch.tensor([0.5 - 2.0**-25])).item() == 1.0  # torch.round says 0
