"""Round-to-nearest: every planned layer quantized on its own, without calibration data for the
weights. A layer whose activations quantize with a calibrated range (static FP8, NVFP4's) needs
calibration data for that range, which the runner observes on the unquantized model before the
weights change (:func:`autoround.algorithms.act_calibration.calibrate_model`), as Intel's
round-to-nearest does."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from autoround.algorithms.base import AlgorithmJob, AlgorithmResult
from autoround.algorithms.fused_scales import fused_tensor_stats
from autoround.layer_plan import LayerPlan
from autoround.layer_quant import LayerQuant, quantize_weight
from autoround.modeling.blocks import linear_weight

logger = logging.getLogger(__name__)


@torch.no_grad()
def quantize_rtn(
    model: nn.Module, plan: LayerPlan, device: torch.device | str | None = None, progress: bool = True
) -> dict[str, LayerQuant]:
    """Quantize-dequantize every planned layer of ``model`` in place, one layer at a time.

    Each weight is moved to ``device`` (default: where it lives), quantized in its own dtype and
    written back, so peak memory stays near the model plus one layer.
    """
    layers = plan.quantized()
    stats = fused_tensor_stats(model, layers)  # fused layers share a per-tensor statistic (NVFP4)
    results: dict[str, LayerQuant] = {}
    for name, scheme in tqdm(layers.items(), desc="RTN", unit="layer", disable=not progress):
        module = model.get_submodule(name)
        weight = linear_weight(module)
        work = weight.to(device) if device is not None else weight
        qdq, quant = quantize_weight(work, scheme, tensor_stat=stats.get(name))
        weight.copy_(qdq.to(weight.device))
        results[name] = quant.cpu()  # with any per-tensor global scale (NVFP4)
    logger.info("RTN quantized %d layers", len(results))
    return results


#: What a round-to-nearest checkpoint records (Intel writes the same).
RTN_RECORDED = {"enable_quanted_input": False}


@dataclass(frozen=True)
class Rtn:
    """Round-to-nearest as a registry entry: per layer, no settings; calibration only for the
    calibrated activation ranges of a plan that has them."""

    name: str = "rtn"
    title: str = "round-to-nearest"
    granularity: Literal["layer", "block"] = "layer"
    settings_type: type | None = None

    def needs_calibration(self, plan: LayerPlan) -> bool:
        """None of its own (calibrated activation ranges are the runner's rule, for every
        algorithm: :func:`autoround.runner.needs_calibration`)."""
        return False

    def quantize(self, model: nn.Module, plan: LayerPlan, job: AlgorithmJob) -> AlgorithmResult:
        layers = quantize_rtn(model, plan, device=job.device, progress=job.progress)
        return AlgorithmResult(layers, dict(RTN_RECORDED))
