"""The int data type's searched-scale qdq (SignRound's ``enable_alg_ext`` start): a scale
``base * factor`` stored as fp16, checked against the textbook formula written out here."""

from __future__ import annotations

import pytest
import torch

from autoround.dtypes import DTYPES

INT = DTYPES["int"]


def test_scaled_qdq_is_the_plain_formula_with_an_fp16_scale() -> None:
    torch.manual_seed(0)
    grouped = torch.randn(6, 16)
    base = -grouped.abs().amax(-1, keepdim=True) / 2
    factor = torch.tensor([1.0, 0.5, 1.5, 2.0, 0.9, 1.1])
    v = torch.rand(6, 16) - 0.5
    qdq, qp = INT.scaled_qdq(grouped, 2, base, factor, v)
    scale = (base * factor[:, None]).half().float()
    expected = scale * torch.clamp(torch.round(grouped / scale + v), -2, 1)
    assert torch.equal(qdq, expected)
    assert torch.equal(qp.scale.float(), scale)
    assert torch.equal(qp.zero, torch.full((6, 1), 2.0))


def test_a_tiny_scale_is_kept_at_the_threshold_with_its_sign() -> None:
    grouped = torch.tensor([[0.5, -0.25], [0.5, -0.25], [0.5, -0.25]])
    base = torch.tensor([[-0.25], [0.25], [-0.25]])
    # 2.5e-7 is an fp16 subnormal (keeps its sign); 2.5e-10 rounds to -0.0, which counts as positive
    _, qp = INT.scaled_qdq(grouped, 4, base, torch.tensor([1e-6, 1e-6, 1e-9]), 0.0)
    assert torch.equal(qp.scale, torch.tensor([[-1e-5], [1e-5], [1e-5]]).half())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_the_tuning_qdq_gives_the_same_values_and_autograds_gradients(bits: int) -> None:
    torch.manual_seed(bits)
    grouped = torch.randn(12, 32) * 0.05
    base = -grouped.abs().amax(-1, keepdim=True) / 2 ** (bits - 1)
    v = (torch.rand(12, 32) - 0.5).requires_grad_()
    factor = (0.5 + torch.rand(12)).requires_grad_()
    fused = INT.scaled_tuning_qdq(grouped, bits, base, factor, v)
    plain, _ = INT.scaled_qdq(grouped, bits, base, factor.detach(), v.detach())
    assert torch.equal(fused, plain)

    # reference: the textbook formula through autograd, the fp16 cast as a value rounding only
    levels = 2 ** (bits - 1)
    raw = base * factor.unsqueeze(-1)
    scale = raw + (raw.detach().half().float() - raw.detach())
    x = grouped / scale + v
    ref = scale * ((x.round() - x).detach() + x).clamp(-levels, levels - 1)
    upstream = torch.randn_like(grouped)
    got = torch.autograd.grad((fused * upstream).sum(), [v, factor])
    want = torch.autograd.grad((ref * upstream).sum(), [v, factor])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_the_searched_scale_starts_a_scaled_qdq_that_matches_the_opt_rtn_qdq() -> None:
    torch.manual_seed(3)
    grouped = torch.randn(16, 32)
    imatrix = torch.rand(32) + 0.1
    base = INT.searched_scale(grouped, 3, 32, imatrix)
    assert base.dtype == torch.float32 and base.shape == (16, 1)
    started, _ = INT.scaled_qdq(grouped, 3, base, torch.ones(16), 0.0)
    opt_rtn, qp = INT.opt_rtn_qdq(grouped, 3, True, 32, imatrix, False, 2, torch.float32)
    assert torch.equal(started, opt_rtn)
    assert torch.equal(qp.zero, torch.full((16, 1), 4.0))
