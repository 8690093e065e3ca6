"""SignRound's tuning forward for the float weight types (FP8, MX, NVFP4): Intel auto-round
0.16.1's values bit for bit, and Intel's straight-through gradients for ``v`` and the factors
(bit for bit for FP8 and NVFP4; for the MX types up to float rounding: their tuning step writes
the derivative out, ``autoround.dtypes.float_fused``, instead of replaying autograd's nodes).

The fixture holds, for seeded float32 / bfloat16 weights (an all-zero row, tiny values, spikes),
random offsets ``v`` and clipping factors (and searched starts ``init_scale``), the
quantize-dequantize Intel's wrapper computes and the gradients its autograd gives for a fixed
upstream gradient; ``scripts/intel/make_float_tuning_fixture.py`` made it inside the separate
Intel venv. Intel's gradients are plain-torch straight-through estimators, independent of ours.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from autoround.dtypes import DTYPES, from_groups, to_groups

FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel" / "float_tuning_qdq.safetensors"
with safe_open(FIXTURE, "pt") as _f:
    CASES = json.loads(_f.metadata()["cases"])
TENSORS = load_file(FIXTURE)
FLOAT_TYPES = ("fp", "mx_fp", "mx_fp_rceil", "mx_fp6e3m2", "mx_fp8e5m2", "mx_int", "nv_fp")


def _ours(case: dict, v: torch.Tensor, factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Our tuning forward and plain qdq of the case's weight (the weight's shape)."""
    dtype = DTYPES[case["data_type"]]
    weight = TENSORS[f"in.{case['dtype']}"]
    grouped, layout = to_groups(weight, case["group_size"])
    bits = case["bits"]
    if case["searched"]:
        init = TENSORS[f"{case['case']}.init_scale"]
        tuned = dtype.scaled_tuning_qdq(grouped, bits, init, factor, v)
        plain, _ = dtype.scaled_qdq(grouped, bits, init, factor.detach(), v.detach())
    else:
        ones = torch.ones_like(factor)
        tuned = dtype.tuning_qdq(grouped, dtype.group_range(grouped), bits, True, v, ones, factor)
        plain, _ = dtype.qdq(grouped, bits, True, v.detach(), 1.0, factor.detach())
    return from_groups(tuned, layout), from_groups(plain, layout), layout


def _leaves(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    v = TENSORS[f"{case['case']}.v"].clone().requires_grad_(True)
    factor = TENSORS[f"{case['case']}.max_scale"].clone().requires_grad_(True)
    return v, factor


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_tuning_and_final_qdq_equal_intels_bit_for_bit(case: dict) -> None:
    v, factor = _leaves(case)
    tuned, plain, _ = _ours(case, v, factor)
    expected = TENSORS[f"{case['id']}.qdq"]
    assert tuned.dtype == expected.dtype and torch.equal(tuned, expected)
    assert torch.equal(plain, expected)


def _assert_same_up_to_rounding(ours: torch.Tensor, intel: torch.Tensor, name: str) -> None:
    """Elementwise ``v`` gradients within float32 rounding and with Intel's signs (all a signed
    descent step reads); per-group factor gradients, sums in which the exact terms often cancel
    (an element that ``v`` leaves where it was contributes 0), within float32 rounding of the
    largest of them."""
    if name == "grad_v":
        torch.testing.assert_close(ours, intel, rtol=2e-6, atol=0, msg=name)
        assert torch.equal(torch.sign(ours), torch.sign(intel)), name
    else:
        torch.testing.assert_close(ours, intel, rtol=0, atol=2e-6 * float(intel.abs().max()), msg=name)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["id"])
def test_gradients_reach_v_and_the_factor_as_intels_straight_through_ones(case: dict) -> None:
    v, factor = _leaves(case)
    tuned, _, _ = _ours(case, v, factor)
    (tuned.float() * TENSORS["upstream"]).sum().backward()
    assert v.grad is not None and factor.grad is not None
    for ours, name in ((v.grad, "grad_v"), (factor.grad, "grad_max_scale")):
        intel = TENSORS[f"{case['id']}.{name}"]
        # Intel's NaN (an all-zero MX group, an NVFP4 block scale of 0) is 0 here.
        assert torch.isfinite(ours).all()
        finite = torch.isfinite(intel)
        if case["data_type"].startswith("mx_"):
            _assert_same_up_to_rounding(ours[finite], intel[finite], name)
        else:
            # the same operations in the same order: bit for bit the same sums
            assert torch.equal(ours[finite], intel[finite]), name
        assert ours.abs().sum() > 0, name


def test_the_fixture_covers_every_float_type_both_dtypes_and_both_starts() -> None:
    assert {c["data_type"] for c in CASES} == set(FLOAT_TYPES)
    assert {c["dtype"] for c in CASES} == {"float32", "bfloat16"}
    assert {c["data_type"] for c in CASES if c["searched"]} == {"mx_fp", "nv_fp"}
    assert {c["group_size"] for c in CASES if c["data_type"] == "fp"} == {-1, 0, 32}


@pytest.mark.parametrize("name", FLOAT_TYPES)
def test_every_float_type_is_tunable_and_min_scale_gets_no_gradient(name: str) -> None:
    dtype = DTYPES[name]
    assert dtype.tunable
    bits = dtype.allowed_bits[-1]
    group = {"nv_fp": 16, "fp": -1}.get(name, 32)
    grouped, _ = to_groups(torch.randn(4, 64) * 0.05, group)
    v = torch.zeros_like(grouped, requires_grad=True)
    min_scale = torch.ones(grouped.shape[0], requires_grad=True)
    max_scale = torch.ones(grouped.shape[0], requires_grad=True)
    out = dtype.tuning_qdq(grouped, dtype.group_range(grouped), bits, True, v, min_scale, max_scale)
    # untrained: exactly round-to-nearest
    assert torch.equal(out, dtype.qdq(grouped, bits, True)[0])
    out.square().sum().backward()
    assert min_scale.grad is None and v.grad is not None and max_scale.grad is not None


def test_only_mx_fp_and_nvfp4_start_from_a_searched_scale() -> None:
    searched = {
        name for name in FLOAT_TYPES if DTYPES[name].searches_scale(DTYPES[name].allowed_bits[0], True)
    }
    assert searched == {"mx_fp", "nv_fp"}


@pytest.mark.parametrize(("name", "bits", "group"), [("mx_fp", 4, 32), ("nv_fp", 4, 16)])
def test_the_searched_start_with_factor_one_is_optimized_rtn(name: str, bits: int, group: int) -> None:
    dtype = DTYPES[name]
    weight = torch.randn(8, 64, generator=torch.Generator().manual_seed(3)) * 0.05
    grouped, _ = to_groups(weight, group)
    imatrix = torch.rand(64, generator=torch.Generator().manual_seed(4))
    base = dtype.searched_scale(grouped, bits, group, imatrix)
    ones = torch.ones(grouped.shape[0])
    expected, _ = dtype.opt_rtn_qdq(grouped, bits, True, group, imatrix, True, 0, torch.float32)
    scaled, _ = dtype.scaled_qdq(grouped, bits, base, ones, 0.0)
    assert torch.equal(scaled, expected)
    tuned = dtype.scaled_tuning_qdq(grouped, bits, base, ones, torch.zeros_like(grouped))
    assert torch.equal(tuned, expected)
