"""Optimized RTN of MX floats (``"mx_fp"``): Intel auto-round 0.16.1's ``quant_mx_opt_rtn`` bit
for bit (its default RTN for MX schemes), with and without an importance matrix, including one
with zeros; the choice it makes (the best of 1x, 0.5x and 2x the group maximum) checked
directly; and a model quantized with it.

The fixture (``fp_qdq.safetensors``, ``scripts/intel/make_fp_fixture.py`` in the Intel venv) also
records a quirk of Intel's lookup: optimized RTN of ``mx_int`` / ``mx_fp6e3m2`` runs with
``mx_fp<bits>`` elements, another type, so ours keeps plain RTN for those types.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import autoround
from autoround.algorithms.opt_rtn import OptRtnSettings
from autoround.dtypes import DTYPES, from_groups, to_groups
from autoround.schemes import Scheme

FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel" / "fp_qdq.safetensors"
with safe_open(FIXTURE, "pt") as _f:
    ALL = json.loads(_f.metadata()["cases"])
CASES = [c for c in ALL if c["key"].startswith("opt_rtn_mx_fp.")]
QUIRKS = [c for c in ALL if c["key"].startswith("opt_rtn_quirk.")]
TENSORS = load_file(FIXTURE)
MX = DTYPES["mx_fp"]
AS_INT = {torch.float32: torch.int32, torch.bfloat16: torch.int16}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bit pattern (so -0.0 differs from 0.0)."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.view(AS_INT[a.dtype]), b.view(AS_INT[b.dtype]))
    )


def opt_rtn(
    weight: torch.Tensor, bits: int, imatrix: torch.Tensor | None, dtype=MX
) -> tuple[torch.Tensor, torch.Tensor]:
    grouped, layout = to_groups(weight, 32)
    out, qp = dtype.opt_rtn_qdq(grouped, bits, True, 32, imatrix, True, 0, weight.dtype)
    return from_groups(out, layout), qp.scale


@pytest.mark.parametrize("case", CASES, ids=[c["key"] for c in CASES])
def test_opt_rtn_and_its_scale_equal_intels_bit_for_bit(case: dict) -> None:
    imatrix = TENSORS.get(f"imatrix.{case['imatrix']}.{case['input']}")
    out, scale = opt_rtn(TENSORS[f"in.{case['input']}.{case['input_dtype']}"], case["bits"], imatrix)
    assert same_bits(out, TENSORS[f"{case['key']}.qdq"])
    assert torch.equal(scale, torch.exp2(TENSORS[f"{case['key']}.scale"].float()))


def test_the_fixture_covers_every_bit_width_and_importance_and_the_search_moves_scales() -> None:
    assert {c["resolved"] for c in CASES} == {"opt_rtn_mx_fp"}
    assert {(c["bits"], c["imatrix"]) for c in CASES} == {
        (b, k) for b in (4, 6, 8) for k in ("none", "pos", "zeros")
    }
    plain = TENSORS["mx_fp_rceil.bits4.edges.float32.scale"]  # any plain case: shapes only
    searched = TENSORS["opt_rtn_mx_fp.bits4.pos.edges.float32.scale"]
    assert searched.shape == plain.shape
    # The search changed some group's exponent from plain RTN's (else this test proves little).
    x = TENSORS["in.edges.float32"]
    _, qp = MX.qdq(to_groups(x, 32)[0], 4, True)
    assert not torch.equal(torch.exp2(searched.float()), qp.scale)


@pytest.mark.parametrize("case", QUIRKS, ids=[c["key"] for c in QUIRKS])
def test_intels_mx_int_and_e3m2_opt_rtn_use_mx_fp_elements_so_ours_keeps_plain_rtn(case: dict) -> None:
    x = TENSORS[f"in.{case['input']}.{case['input_dtype']}"]
    intel = TENSORS[f"{case['key']}.qdq"]
    assert same_bits(opt_rtn(x, case["bits"], None)[0], intel), "Intel's output is mx_fp's optimized RTN"
    assert not DTYPES[case["dtype"]].searches_scale(case["bits"], True)


def test_the_search_keeps_the_best_of_the_three_candidate_maxima() -> None:
    torch.manual_seed(0)
    weight = torch.randn(8, 96)
    weight[0, :32] = 7.9  # floor's scale clips 7.9 to 6; twice the maximum keeps it (8)
    imatrix = torch.rand(96) + 0.1
    grouped, _ = to_groups(weight, 32)
    out, qp = MX.opt_rtn_qdq(grouped, 4, True, 32, imatrix, True, 0, torch.float32)
    imp = imatrix.reshape(1, -1).expand(8, -1).reshape(grouped.shape)
    losses = []
    for factor in (1.0, 0.5, 2.0):  # plain RTN of the maximum scaled by factor (Intel's max_scale)
        candidate, _ = MX.qdq(grouped, 4, True, max_scale=torch.full((grouped.shape[0],), factor))
        losses.append(((candidate.double() - grouped.double()) ** 2 * imp.double()).sum(-1))
    chosen = ((out.double() - grouped.double()) ** 2 * imp.double()).sum(-1)
    assert torch.allclose(chosen, torch.stack(losses).min(0).values, rtol=1e-6, atol=0)
    assert qp.scale[0].item() == 2.0 and out[0, 0] == 8.0


def test_optimized_rtn_of_a_model_uses_it(tiny_llama) -> None:
    # 8 bits: no importance matrix is collected (the algorithm's rule for every type), so none
    # is needed here; MXFP4/6 layers get one from calibration data.
    scheme = Scheme(bits=8, group_size=32, data_type="mx_fp")
    before = {
        n: m.weight.detach().clone() for n, m in tiny_llama.named_modules() if isinstance(m, torch.nn.Linear)
    }
    qm = autoround.quantize(tiny_llama, scheme, opt_rtn=OptRtnSettings(), progress=False)
    assert qm.layers
    searched = 0
    for name in qm.layers:
        expected, _ = opt_rtn(before[name], 8, None)
        assert same_bits(tiny_llama.get_submodule(name).weight.detach(), expected), name
        grouped, layout = to_groups(before[name], 32)
        searched += not torch.equal(expected, from_groups(MX.qdq(grouped, 8, True)[0], layout))
    assert searched, "the search changed no layer: this test would not tell it from plain RTN"
