"""The interface every quantization algorithm implements, and what it is given and returns.

An algorithm turns the planned layers of a model into quantize-dequantized weights plus each
layer's :class:`~autoround.layer_quant.LayerQuant`. It says what calibration it needs for a plan,
and whether it works layer by layer (RTN, optimized RTN) or block by block (SignRound).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from autoround.layer_plan import LayerPlan
from autoround.layer_quant import LayerQuant

#: Called after each finished block: (block index, its layers' parameters by full name, report).
BlockDone = Callable[[int, dict[str, LayerQuant], Any], None]
#: Puts a finished block's quantized weights back into the model block (a resumed run) and
#: returns its layers' parameters, or returns None for a block still to tune.
BlockRestore = Callable[[int, nn.Module], dict[str, LayerQuant] | None]


class BlockResidency(Protocol):
    """Brings a block's weights into memory before its turn and drops them after
    (``low_cpu_mem_usage``: the model's blocks wait on the meta device).

    The walk calls :meth:`load` only once the first block's inputs are captured: from then on
    the tensors outside the blocks (embeddings, final norm, ``lm_head``) may be released.
    """

    def load(self, index: int) -> None: ...

    def release(self, index: int) -> None: ...


@dataclass(frozen=True)
class AlgorithmJob:
    """What an algorithm runs with besides the model and the plan.

    ``settings`` is the algorithm's own frozen settings object; ``calibration`` token ids
    (nsamples, seqlen) when :meth:`Algorithm.needs_calibration` said so; ``device`` where the
    work happens (None: where the weights live). The hooks (and ``residency``) are for
    block-wise algorithms.
    """

    settings: Any
    calibration: torch.Tensor | None = None
    device: torch.device | str | None = None
    progress: bool = True
    low_gpu_mem_usage: bool = False
    on_block_done: BlockDone | None = None
    restore: BlockRestore | None = None
    residency: BlockResidency | None = None


@dataclass
class AlgorithmResult:
    """Every quantized layer's parameters, the settings the checkpoint records (Intel's keys),
    and per-block reports (block-wise algorithms only)."""

    layers: dict[str, LayerQuant]
    recorded: dict[str, Any]
    reports: list[Any] = field(default_factory=list)


class Algorithm(Protocol):
    """One quantization algorithm, registered by name in :data:`autoround.algorithms.ALGORITHMS`."""

    @property
    def name(self) -> str: ...

    @property
    def title(self) -> str:
        """How messages name it ("SignRound")."""
        ...

    @property
    def granularity(self) -> Literal["layer", "block"]:
        """Whether it quantizes each layer alone or tunes whole decoder blocks."""
        ...

    @property
    def settings_type(self) -> type | None:
        """The frozen settings class it takes (None: it takes none)."""
        ...

    def needs_calibration(self, plan: LayerPlan) -> bool:
        """Whether quantizing ``plan`` needs calibration token ids."""
        ...

    def quantize(self, model: nn.Module, plan: LayerPlan, job: AlgorithmJob) -> AlgorithmResult:
        """Quantize ``model``'s planned layers in place."""
        ...
