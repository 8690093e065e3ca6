"""Where SignRound's clipping factors start: 1.0 (Intel) or the weight-error-optimal factor."""

from __future__ import annotations

import pytest
import torch

from autoround.algorithms.clip_init import MSE_GRID, initial_clipping
from autoround.algorithms.signround import SignRoundSettings, tune_block
from autoround.dtypes import DTYPES, to_groups
from autoround.modeling.capture import block_output, capture_block_inputs
from autoround.schemes import Scheme

INT = DTYPES["int"]


def _grouped(group_size: int = 32) -> torch.Tensor:
    weight = torch.randn(48, 96, generator=torch.Generator().manual_seed(0))
    weight[0, 0] = 9.0  # an outlier: the full range wastes levels on it
    return to_groups(weight, group_size)[0]


def _rtn_error(grouped: torch.Tensor, bits: int, sym: bool, factors: torch.Tensor) -> torch.Tensor:
    qdq, _ = INT.qdq(grouped, bits, sym, torch.zeros_like(grouped), factors, factors)
    return (qdq - grouped).square().sum(dim=-1)


def test_minmax_starts_at_the_full_range() -> None:
    assert torch.equal(initial_clipping(INT, _grouped(), 2, True, "minmax"), torch.ones(_grouped().shape[0]))


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("sym", [True, False])
def test_mse_start_is_the_grid_factor_with_the_least_weight_error(bits, sym) -> None:
    grouped = _grouped()
    chosen = initial_clipping(INT, grouped, bits, sym, "mse")
    errors = torch.stack([_rtn_error(grouped, bits, sym, torch.full_like(chosen, f)) for f in MSE_GRID])
    assert torch.equal(_rtn_error(grouped, bits, sym, chosen), errors.min(dim=0).values)
    assert set(chosen.tolist()) <= set(torch.tensor(MSE_GRID).tolist())  # float32 values of the grid
    assert (chosen < 1).any()  # the outlier's group at least is clipped


def test_an_unknown_start_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"init_clipping.*minmax.*mse.*'best'"):
        SignRoundSettings(init_clipping="best")
    with pytest.raises(ValueError, match="'best'"):
        initial_clipping(INT, _grouped(), 2, True, "best")


def test_mse_start_lowers_a_two_bit_blocks_first_loss(tiny_llama) -> None:
    torch.manual_seed(1)
    calibration = torch.randint(0, 128, (8, 32))
    block = tiny_llama.model.layers[0]
    captured = capture_block_inputs(tiny_llama, block, calibration, torch.device("cpu"), progress=False)
    with torch.no_grad():
        targets = block_output(block, captured.hidden, captured.kwargs)
    layers = {
        name: Scheme(bits=2, group_size=32) for name in ("mlp.up_proj", "mlp.gate_proj", "mlp.down_proj")
    }

    def first_loss(how: str) -> float:
        settings = SignRoundSettings(iters=1, batch_size=8, init_clipping=how, enable_alg_ext=False)
        return tune_block(block, captured.hidden, targets, captured.kwargs, layers, settings).initial_loss

    assert first_loss("mse") < first_loss("minmax")
