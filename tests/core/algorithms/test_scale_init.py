"""enable_alg_ext: SignRound starts symmetric int layers from optimized RTN's searched scale.

The searched-scale qdq itself (formula and gradients) is tested with the int data type,
tests/core/dtypes/test_int_scaled.py.
"""

from __future__ import annotations

import pytest
import torch

from autoround import quantize, save
from autoround.algorithms.imatrix import collect_input_squares
from autoround.algorithms.opt_rtn import opt_rtn_weight
from autoround.algorithms.scale_init import outlier_suppressed_mse
from autoround.algorithms.signround import SignRoundSettings, TunedLinear
from autoround.dtypes import DTYPES, to_groups
from autoround.loading import load_dense
from autoround.schemes import PRESETS

W2G32 = PRESETS["W2A16G32"]
INT = DTYPES["int"]


@pytest.fixture
def calibration():
    torch.manual_seed(1)
    return torch.randint(0, 128, (8, 32))


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
    assert torch.equal(
        INT.searched_scale(grouped, 2, 32, imatrix).half().reshape(quant.scale.shape), quant.scale
    )


def test_an_untrained_wrapper_from_a_searched_scale_is_optimized_rtn(tiny_llama) -> None:
    linear = tiny_llama.model.layers[0].mlp.down_proj
    weight = linear.weight.detach()
    grouped, _ = to_groups(weight, W2G32.group_size)
    tuned = TunedLinear(linear, W2G32, tune_minmax=True, base_scale=INT.searched_scale(grouped, 2, 32, None))
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
