"""The result of quantizing a model: the model (weights quantize-dequantized in place) plus the
per-layer parameters a format needs to pack it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from autoround.layer_plan import LayerPlan
from autoround.layer_quant import LayerQuant
from autoround.schemes import Scheme


@dataclass
class QuantizedModel:
    """A model whose planned layers hold quantize-dequantized weights.

    Attributes:
        model: the transformers model, runnable as is (fake-quantized).
        scheme: the default scheme (what ``config.json`` states at top level).
        plan: every Linear-like layer's decision.
        layers: scale / zero point of every quantized layer, by module name.
        settings: algorithm settings a checkpoint records (``iters``, ``lr``, ...).
        tokenizer: saved beside the weights when given.
        reports: per-block tuning reports (SignRound only).
    """

    model: nn.Module
    scheme: Scheme
    plan: LayerPlan
    layers: dict[str, LayerQuant]
    settings: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any | None = None
    reports: list[Any] = field(default_factory=list)
