"""Optimized RTN of NVFP4 (``"nv_fp"``): Intel auto-round 0.16.1's ``opt_rtn_fast_nvfp4`` bit for
bit (its default RTN for NVFP4), with and without an importance matrix (one with zeros too), and
the choice it makes (the best of 102 factors of each block maximum) checked directly.

The fixture is ``fp_qdq.safetensors`` (``scripts/intel/make_fp_fixture.py`` in the Intel venv).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from autoround.dtypes import DTYPES, from_groups, to_groups
from autoround.dtypes.nv_fp_search import best_factors

FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel" / "fp_qdq.safetensors"
with safe_open(FIXTURE, "pt") as _f:
    CASES = [c for c in json.loads(_f.metadata()["cases"]) if c["key"].startswith("opt_rtn_nv_fp.")]
TENSORS = load_file(FIXTURE)
NV = DTYPES["nv_fp"]
AS_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bit pattern (so -0.0 differs from 0.0)."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.view(AS_INT[a.dtype]), b.view(AS_INT[b.dtype]))
    )


@pytest.mark.parametrize("case", CASES, ids=[c["key"] for c in CASES])
def test_opt_rtn_and_its_block_scales_equal_intels_bit_for_bit(case: dict) -> None:
    weight = TENSORS[f"in.{case['input']}.{case['input_dtype']}"]
    grouped, layout = to_groups(weight, 16)
    imatrix = TENSORS.get(f"imatrix.{case['imatrix']}.{case['input']}")
    out, qp = NV.opt_rtn_qdq(grouped, 4, True, 16, imatrix, True, 0, weight.dtype)
    assert same_bits(from_groups(out, layout), TENSORS[f"{case['key']}.qdq"])
    assert same_bits(qp.block_scale, TENSORS[f"{case['key']}.scale"])  # type: ignore[attr-defined]


def test_the_fixture_covers_every_importance_and_the_search_moves_scales() -> None:
    assert {c["resolved"] for c in CASES} == {"opt_rtn_nv_fp4"}
    assert {(c["imatrix"], c["input_dtype"]) for c in CASES} == {
        (k, d) for k in ("none", "pos", "zeros") for d in ("float32", "bfloat16")
    }
    x = TENSORS["in.partial.float32"]
    _, plain = NV.qdq(to_groups(x, 16)[0], 4, True)
    assert not torch.equal(plain.block_scale, TENSORS["opt_rtn_nv_fp.pos.partial.float32.scale"])  # type: ignore[attr-defined]


def test_the_search_keeps_the_best_factor_of_each_block() -> None:
    torch.manual_seed(1)
    grouped = torch.randn(12, 16)
    imatrix = torch.rand(16) + 0.1
    out, _ = NV.opt_rtn_qdq(grouped, 4, True, 16, imatrix, True, 0, torch.float32)
    losses = []
    for n in range(50, 152):  # plain RTN with each block maximum scaled by n / 100
        candidate, _ = NV.qdq(grouped, 4, True, max_scale=torch.full((12,), n / 100.0))
        losses.append(((candidate.double() - grouped.double()) ** 2 * imatrix.double()).sum(-1))
    chosen = ((out.double() - grouped.double()) ** 2 * imatrix.double()).sum(-1)
    assert torch.allclose(chosen, torch.stack(losses).min(0).values, rtol=1e-6, atol=0)


def test_the_searched_factors_are_those_of_trying_every_factor_in_intels_order() -> None:
    """Each block keeps the first factor (1.00, then 0.50 ... 1.51) of smallest error, ties (many
    factors round to one E4M3 scale) and tiny, zero and large blocks included."""
    torch.manual_seed(2)
    grouped = torch.randn(96, 16) * torch.logspace(-7, 1, 96).unsqueeze(1)
    grouped[5] = 0.0
    importance = torch.rand(96, 16)
    best_error = best = None
    for factor in (1.0, *(n / 100.0 for n in range(50, 152) if n != 100)):
        out, _ = NV.qdq(grouped, 4, True, max_scale=torch.full((96, 1), factor))
        error = ((out - grouped) * (out - grouped) * importance).sum(-1)
        if best_error is None or best is None:
            best_error, best = error, torch.full((96,), factor)
            continue
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best = torch.where(better, torch.tensor(factor), best)
    assert best is not None
    assert torch.equal(best_factors(NV, grouped, importance).squeeze(1), best)
