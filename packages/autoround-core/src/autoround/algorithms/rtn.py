"""Round-to-nearest: every planned layer quantized on its own, without calibration data."""

from __future__ import annotations

import logging

import torch
from torch import nn
from tqdm.auto import tqdm

from autoround.layer_plan import LayerPlan
from autoround.modeling.blocks import linear_weight
from autoround.quantizer import LayerQuant, quantize_weight

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
    results: dict[str, LayerQuant] = {}
    for name, scheme in tqdm(layers.items(), desc="RTN", unit="layer", disable=not progress):
        module = model.get_submodule(name)
        weight = linear_weight(module)
        work = weight.to(device) if device is not None else weight
        qdq, quant = quantize_weight(work, scheme)
        weight.copy_(qdq.to(weight.device))
        results[name] = LayerQuant(quant.scheme, quant.scale.cpu(), quant.zero.cpu())
    logger.info("RTN quantized %d layers", len(results))
    return results
