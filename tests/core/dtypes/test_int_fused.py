"""The fused symmetric qdq used for tuning: same values as the plain formula, autograd's
gradients (with the scale's gradient kept in fp32)."""

from __future__ import annotations

import pytest
import torch

from autoround.dtypes import DTYPES
from autoround.dtypes.int_fused import symmetric_qdq

INT = DTYPES["int"]


def reference(grouped, v, min_scale, max_scale, bits):
    """Autograd through the textbook formula; the fp16 cast done as a value rounding only."""
    levels = 2 ** (bits - 1)
    wmin, wmax = grouped.min(-1)[0].clamp(max=0), grouped.max(-1)[0].clamp(min=0)
    lo, hi = -(wmin * min_scale), wmax * max_scale
    raw = torch.where(hi < lo, lo, -hi) / levels
    scale = raw + (raw.detach().half().float() - raw.detach())
    scale = scale.unsqueeze(-1)
    x = grouped / scale + v
    q = (x.round() - x).detach() + x
    return scale * q.clamp(-levels, levels - 1)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_values_equal_the_plain_qdq_and_gradients_equal_autograd(bits: int) -> None:
    torch.manual_seed(bits)
    grouped = torch.randn(12, 32) * 0.05
    v = (torch.rand(12, 32) - 0.5).requires_grad_()
    lo_factor = (0.6 + 0.4 * torch.rand(12)).requires_grad_()
    hi_factor = (0.6 + 0.4 * torch.rand(12)).requires_grad_()
    fused = symmetric_qdq(grouped, *INT.group_range(grouped), v, lo_factor, hi_factor, bits)
    plain, _ = INT.qdq(grouped, bits, True, v.detach(), lo_factor.detach(), hi_factor.detach())
    assert torch.equal(fused, plain)

    upstream = torch.randn_like(grouped)
    fused_grads = torch.autograd.grad((fused * upstream).sum(), [v, lo_factor, hi_factor])
    ref = reference(grouped, v, lo_factor, hi_factor, bits)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), [v, lo_factor, hi_factor])
    for got, want in zip(fused_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
