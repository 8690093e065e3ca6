"""Whether a tuned block keeps its tuned parameters or falls back to round-to-nearest.

SignRound keeps the parameters of the iteration with the lowest loss, and each iteration's loss
is measured on the batch that iteration drew: a lucky batch can crown parameters that are worse
than RTN on the rest of the calibration set. Seen on SmolLM2 with FP8_STATIC (cpu-small, 20
iterations): in block 11, where a ``down_proj`` input reaches about 3000 on a few tokens (its
static FP8 range), the batch losses of one run spread from 0.8 to 16.6; the kept parameters came
from the 0.8 batch and gave 9.7 on the first batch against RTN's 3.6.

So the tuned block is compared with RTN on the first batch (the report's losses, computed
anyway), and where it loses there, on the whole calibration set; it keeps RTN only if it loses
there too (one extra pass of each parameter set over the calibration samples, in the blocks that
look suspicious only). A loss that became non-finite falls back as before.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoround.algorithms.act_tuning import quantized_inputs
from autoround.algorithms.block_activations import WORK_DTYPE, BlockActivations, outputs
from autoround.algorithms.signround import TunedParams, qdq_with
from autoround.layer_quant import LayerQuant
from autoround.modeling.blocks import linear_weight

logger = logging.getLogger(__name__)


def set_weights(
    block: nn.Module, model_block: nn.Module | None, layers: dict[str, Any], params: dict[str, TunedParams]
) -> dict[str, LayerQuant]:
    """Quantize-dequantize each layer with its parameters: in the fp32 work block and (if given)
    in the model's own block, in its dtype. Returns the model-side layer parameters."""
    quants = {}
    for name, scheme in layers.items():
        target = model_block.get_submodule(name) if model_block is not None else block.get_submodule(name)
        weight = linear_weight(target)
        qdq, quant = qdq_with(weight.detach().to(params[name].v.device), scheme, params[name])
        with torch.no_grad():
            weight.copy_(qdq.to(weight.device))
            if model_block is not None:
                linear_weight(block.get_submodule(name)).copy_(qdq.to(WORK_DTYPE))
        quants[name] = quant.cpu()
    return quants


@dataclass(frozen=True)
class Verdict:
    """The parameters a tuned block keeps, and RTN's and their loss on the first batch."""

    params: dict[str, TunedParams]
    rtn_loss: float
    tuned_loss: float
    fell_back: bool


@dataclass(frozen=True)
class BlockJudge:
    """Measures parameter sets of one block (``work``, holding its original weights) on the
    block's calibration inputs ``acts.tuned`` against the targets ``acts.fp``; ``ranges`` are
    the calibrated activation ranges of the layers that have one."""

    work: nn.Module
    layers: dict[str, Any]
    ranges: dict[str, torch.Tensor]
    acts: BlockActivations
    kwargs: dict[str, Any]
    batch_size: int

    def verdict(self, name: str, tuned: dict[str, TunedParams], best_loss: float) -> Verdict:
        """The parameters ``name``'s block keeps: ``tuned`` (best loss ``best_loss`` during
        tuning) unless it went non-finite or loses to RTN on the first batch and on all samples."""
        rtn = {n: p.rtn() for n, p in tuned.items()}
        rtn_loss = self._loss(rtn, self._first_batch)
        if not math.isfinite(best_loss):
            logger.warning("%s: loss became %s during tuning; keeping its RTN result", name, best_loss)
            return Verdict(rtn, rtn_loss, rtn_loss, True)
        tuned_loss = self._loss(tuned, self._first_batch)
        if tuned_loss <= rtn_loss:
            return Verdict(tuned, rtn_loss, tuned_loss, False)
        rtn_all, tuned_all = self._loss(rtn, self._all_samples), self._loss(tuned, self._all_samples)
        if tuned_all <= rtn_all:
            return Verdict(tuned, rtn_loss, tuned_loss, False)
        logger.info(
            "%s: the tuned parameters lose to RTN on the calibration set (loss %.3e vs %.3e); keeping RTN",
            name,
            tuned_all,
            rtn_all,
        )
        return Verdict(rtn, rtn_loss, rtn_loss, True)

    def _loss(self, params: dict[str, TunedParams], measure: Callable[[], float]) -> float:
        originals = {n: linear_weight(self.work.get_submodule(n)).detach().clone() for n in self.layers}
        ranges = {n: params[n].input_range(r) for n, r in self.ranges.items()}
        try:
            with quantized_inputs(self.work, self.layers, ranges):
                set_weights(self.work, None, self.layers, params)
                return measure()
        finally:
            for n, weight in originals.items():
                linear_weight(self.work.get_submodule(n)).data.copy_(weight)

    def _first_batch(self) -> float:
        return self._mean_error(0, self.batch_size)

    def _all_samples(self) -> float:
        return self._mean_error(0, len(self.acts.tuned))

    def _mean_error(self, start: int, stop: int) -> float:
        total, count = 0.0, 0
        for at in range(start, stop, self.batch_size):
            end = min(at + self.batch_size, stop)
            rows = self.acts.tuned[at:end]
            out = outputs(self.work, rows, self.kwargs, self.batch_size, self.acts.autocast)
            target = self.acts.fp[at:end].to(out.device, WORK_DTYPE)
            total += torch.square(out - target).sum().item()
            count += target.numel()
        return total / count
