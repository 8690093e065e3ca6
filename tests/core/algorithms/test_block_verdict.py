"""A tuned block keeps its parameters unless they lose to round-to-nearest on its calibration set.

The block here is one 32 x 32 Linear whose only non-zero row is built so that the rounding of
two weights decides everything: RTN rounds weight 0 down by 0.4 steps and weight 1 down by 0.3;
the "tuned" offsets round weight 1 up instead (+0.7). An input along weight 1 alone then favours
RTN (0.3 < 0.7 steps of error), an input along both weights favours the tuned rounding
(|-0.4 + 0.7| < |-0.4 - 0.3|). Losses are worked out by hand below, not by the code under test.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from autoround.algorithms.block_activations import BlockActivations
from autoround.algorithms.block_verdict import BlockJudge
from autoround.algorithms.signround import TunedParams
from autoround.layer_quant import quantize_weight
from autoround.schemes import PRESETS

W4G32 = PRESETS["W4A16G32"]
BATCH = 2


def _designed_block() -> tuple[nn.Module, float]:
    block = nn.Sequential(nn.Linear(32, 32, bias=False))
    weight = torch.zeros(32, 32)
    weight[0, 2] = 1.0  # the group's maximum sets the step
    _, quant = quantize_weight(weight, W4G32)
    step = float(quant.scale.flatten()[0])
    weight[0, 0], weight[0, 1] = 1.4 * step, 2.3 * step
    with torch.no_grad():
        block[0].weight.copy_(weight)
    rtn, _ = quantize_weight(weight, W4G32)
    assert torch.allclose(rtn[0, :2] - weight[0, :2], torch.tensor([-0.4, -0.3]) * step, atol=1e-5)
    return block, step


def _params(round_weight_1_up: bool) -> dict[str, TunedParams]:
    v = torch.zeros(32, 32)
    if round_weight_1_up:
        v[0, 1] = 0.5  # 2.3 + 0.5 rounds to 3
    return {"0": TunedParams(v, torch.ones(32), torch.ones(32))}


def _judge(block: nn.Module, first_batch: torch.Tensor, rest: torch.Tensor) -> BlockJudge:
    hidden = torch.cat([first_batch, rest]).unsqueeze(1)  # (samples, 1 token, 32)
    acts = BlockActivations.start(hidden, True, torch.float32, torch.device("cpu"))
    acts.advance_fp(block, {}, BATCH)
    return BlockJudge(block, {"0": W4G32}, {}, acts, {}, BATCH)


def _rows(*columns: int, n: int) -> torch.Tensor:
    rows = torch.zeros(n, 32)
    rows[:, list(columns)] = 1.0
    return rows


def test_tuned_parameters_that_win_on_the_first_batch_are_kept() -> None:
    block, step = _designed_block()
    judge = _judge(block, _rows(0, 1, n=BATCH), _rows(1, n=6))
    verdict = judge.verdict("b", _params(round_weight_1_up=True), best_loss=0.0)
    assert not verdict.fell_back
    assert verdict.params["0"].v[0, 1] == 0.5
    # output 0 errs by -0.7 steps under RTN and +0.3 tuned; the other 31 outputs are exact
    assert verdict.rtn_loss == pytest.approx((0.7 * step) ** 2 / 32, rel=1e-4)
    assert verdict.tuned_loss == pytest.approx((0.3 * step) ** 2 / 32, rel=1e-4)


def test_losing_on_the_first_batch_but_winning_on_all_samples_keeps_the_tuned_parameters() -> None:
    block, _ = _designed_block()
    # first batch: along weight 1 only (RTN better); the other 6 samples along both (tuned better)
    judge = _judge(block, _rows(1, n=BATCH), _rows(0, 1, n=6))
    verdict = judge.verdict("b", _params(round_weight_1_up=True), best_loss=0.0)
    assert verdict.tuned_loss > verdict.rtn_loss
    assert not verdict.fell_back
    assert verdict.params["0"].v[0, 1] == 0.5


def test_losing_on_the_first_batch_and_on_all_samples_falls_back_to_rtn(caplog) -> None:
    block, step = _designed_block()
    judge = _judge(block, _rows(1, n=BATCH), _rows(1, n=6))
    with caplog.at_level(logging.INFO, logger="autoround.algorithms.block_verdict"):
        verdict = judge.verdict("model.layers.11", _params(round_weight_1_up=True), best_loss=0.0)
    assert verdict.fell_back
    assert torch.equal(verdict.params["0"].v, torch.zeros(32, 32))
    assert verdict.tuned_loss == verdict.rtn_loss == pytest.approx((0.3 * step) ** 2 / 32, rel=1e-4)
    assert "model.layers.11: the tuned parameters lose to RTN on the calibration set" in caplog.text


def test_a_non_finite_best_loss_falls_back_without_measuring_the_tuned_parameters(caplog) -> None:
    block, _ = _designed_block()
    judge = _judge(block, _rows(0, 1, n=BATCH), _rows(0, 1, n=2))
    with caplog.at_level(logging.WARNING):
        verdict = judge.verdict("b", _params(round_weight_1_up=True), best_loss=float("nan"))
    assert verdict.fell_back
    assert "b: loss became nan during tuning; keeping its RTN result" in caplog.text


def test_the_judged_block_keeps_its_original_weights() -> None:
    block, _ = _designed_block()
    before = block[0].weight.detach().clone()
    _judge(block, _rows(1, n=BATCH), _rows(1, n=6)).verdict("b", _params(round_weight_1_up=True), 0.0)
    assert torch.equal(block[0].weight, before)
