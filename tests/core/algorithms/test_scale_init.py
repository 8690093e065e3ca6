"""enable_alg_ext: SignRound starts symmetric int layers from optimized RTN's searched scale."""

from __future__ import annotations

import pytest
import torch

from autoround import quantize, save
from autoround.algorithms.imatrix import collect_input_squares
from autoround.algorithms.opt_rtn import opt_rtn_weight
from autoround.algorithms.scale_init import (
    outlier_suppressed_mse,
    scaled_sym_qdq,
    searched_scale,
    tuning_qdq,
)
from autoround.algorithms.signround import SignRoundSettings, TunedLinear
from autoround.dtypes import to_groups
from autoround.formats.dense import load_dense
from autoround.schemes import PRESETS

W2G32 = PRESETS["W2A16G32"]


@pytest.fixture
def calibration():
    torch.manual_seed(1)
    return torch.randint(0, 128, (8, 32))


def test_scaled_qdq_is_the_plain_formula_with_an_fp16_scale() -> None:
    torch.manual_seed(0)
    grouped = torch.randn(6, 16)
    base = -grouped.abs().amax(-1, keepdim=True) / 2
    factor = torch.tensor([1.0, 0.5, 1.5, 2.0, 0.9, 1.1])
    v = torch.rand(6, 16) - 0.5
    qdq, qp = scaled_sym_qdq(grouped, 2, base, factor, v)
    scale = (base * factor[:, None]).half().float()
    expected = scale * torch.clamp(torch.round(grouped / scale + v), -2, 1)
    assert torch.equal(qdq, expected)
    assert torch.equal(qp.scale.float(), scale)
    assert torch.equal(qp.zero, torch.full((6, 1), 2.0))


def test_outlier_suppressed_loss_drops_the_largest_thousandth_of_errors() -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(4, 500), torch.randn(4, 500)
    errors = (pred - target).square().flatten().sort().values
    expected = errors[:-2].sum() / errors.numel()  # 2000 elements: the 2 largest left out
    assert torch.allclose(outlier_suppressed_mse(pred, target), expected)


def test_searched_scale_is_optimized_rtns_scale(tiny_llama) -> None:
    weight = tiny_llama.model.layers[0].mlp.down_proj.weight.detach()
    imatrix = torch.rand(weight.shape[1]) + 0.1
    grouped, _ = to_groups(weight, W2G32.group_size)
    _, quant = opt_rtn_weight(weight, W2G32, imatrix)
    assert torch.equal(searched_scale(grouped, 2, 32, imatrix).half().reshape(quant.scale.shape), quant.scale)


def test_an_untrained_wrapper_from_a_searched_scale_is_optimized_rtn(tiny_llama) -> None:
    linear = tiny_llama.model.layers[0].mlp.down_proj
    weight = linear.weight.detach()
    grouped, _ = to_groups(weight, W2G32.group_size)
    tuned = TunedLinear(linear, W2G32, tune_minmax=True, base_scale=searched_scale(grouped, 2, 32, None))
    expected, _ = opt_rtn_weight(weight, W2G32)
    assert torch.equal(tuned.qdq_weight(), expected)
    assert not tuned.min_scale.requires_grad  # one factor on the searched scale
    tuned.max_scale.data.fill_(3.0)
    tuned.clamp_()
    assert torch.all(tuned.max_scale == 2.0)  # the factor may widen the range, up to 2x


def test_input_squares_are_summed_over_every_token() -> None:
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 5, 4)
    with collect_input_squares(torch.nn.Sequential(layer), ["0"]) as sums:
        layer(x[:1])
        layer(x[1:])
    assert torch.allclose(sums["0"], x.square().sum(dim=(0, 1)))


def test_alg_ext_tuning_beats_rtn_on_every_block_and_saves_a_plain_checkpoint(
    tmp_path, tiny_llama, calibration
) -> None:
    qm = quantize(
        tiny_llama,
        W2G32,
        tuning=SignRoundSettings(iters=12, batch_size=4, enable_alg_ext=True),
        calibration=calibration,
        progress=False,
    )
    for report in qm.reports:
        assert report.tuned_loss < report.rtn_loss, report
    dense = load_dense(save(qm, tmp_path / "ckpt")).state_dict()
    for name, param in qm.model.state_dict().items():
        assert torch.equal(dense[name], param), name


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_the_tuning_qdq_gives_the_same_values_and_autograds_gradients(bits: int) -> None:
    torch.manual_seed(bits)
    grouped = torch.randn(12, 32) * 0.05
    base = -grouped.abs().amax(-1, keepdim=True) / 2 ** (bits - 1)
    v = (torch.rand(12, 32) - 0.5).requires_grad_()
    factor = (0.5 + torch.rand(12)).requires_grad_()
    fused = tuning_qdq(grouped, bits, base, factor, v)
    plain, _ = scaled_sym_qdq(grouped, bits, base, factor.detach(), v.detach())
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


def test_layers_sharing_one_input_each_get_the_full_sum() -> None:
    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x).sum() + self.b(x).sum()

    twin, x = Twin(), torch.randn(2, 5, 4)
    with collect_input_squares(twin, ["a", "b"]) as sums:
        twin(x[:1])
        twin(x[1:])
    expected = x.square().sum(dim=(0, 1))
    assert torch.allclose(sums["a"], expected) and torch.allclose(sums["b"], expected)
