"""The search: measure every unit at every option, choose within the budget, and say what was
chosen as a ``layer_config`` the ordinary layer plan takes (so RTN, optimized RTN and SignRound
run unchanged after it)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autoround.auto_scheme.config import METHODS
from autoround.auto_scheme.layer_error import measure as layer_measure
from autoround.auto_scheme.sensitivity import measure as block_measure
from autoround.auto_scheme.solver import solve
from autoround.auto_scheme.space import SearchSpace, Unit
from autoround.errors import SchemeError
from autoround.schemes import Scheme, SchemeLike

logger = logging.getLogger(__name__)

#: How each unit's error at each option is measured: (model, space, input_ids, device, progress)
#: -> ``errors[unit][option]``.
Measure = Callable[[nn.Module, SearchSpace, torch.Tensor, torch.device | str | None, bool], list[list[float]]]
#: ``AutoScheme.method`` -> its measure (docs/auto_scheme.md says why the default).
MEASURES: dict[str, Measure] = {"default": layer_measure, "block": block_measure}
if set(MEASURES) != set(METHODS):  # config validates against METHODS without importing this
    raise AssertionError(f"AutoScheme methods {METHODS} and measures {sorted(MEASURES)} differ")


@dataclass(frozen=True)
class SchemePlan:
    """What the search chose.

    Attributes:
        layer_config: the run's ``layer_config`` with every searched layer added by its exact
            name (the pins stay as they were given).
        default: the quantized option holding the most weights (the checkpoint's top-level
            scheme; the other layers are listed in its ``extra_config``).
        chosen: the option name of every searched layer and head.
        bits, weights: the plan's bits and the weights they are counted over.
        target: the budget in bits per weight; seconds: how long the search took.
    """

    layer_config: dict[str, SchemeLike]
    default: Scheme
    chosen: dict[str, str]
    bits: int
    weights: int
    target: float
    seconds: float

    @property
    def avg_bits(self) -> float:
        """The plan's bits per weight, counted as the budget is."""
        return self.bits / self.weights

    def summary(self, fixed: int = 0) -> str:
        """One line for the log: bits reached and layers per option."""
        counts = Counter(self.chosen.values())
        per_option = ", ".join(f"{name} x {n}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        pinned = f", {fixed} pinned or 16-bit layers" if fixed else ""
        return (
            f"AutoScheme: {self.avg_bits:.4f} bits per weight (budget {self.target:.4f}): "
            f"{per_option}{pinned}; searched in {self.seconds:.1f} s"
        )


def search(
    model: nn.Module,
    space: SearchSpace,
    input_ids: torch.Tensor,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> SchemePlan:
    """Measure, choose and return the plan; ``input_ids`` (nsamples, seqlen) calibrate the search."""
    start = time.perf_counter()
    heads = head_options(space)
    head_bits = sum(unit.costs[i] for unit, i in zip(space.heads, heads, strict=True))
    errors = MEASURES[space.auto.method](model, space, input_ids, device, progress)
    left = space.budget - space.fixed_bits - head_bits
    choice = solve([u.costs for u in space.units], errors, left)
    picked = [*zip(space.units, choice, strict=True), *zip(space.heads, heads, strict=True)]
    plan = _plan(space, picked, time.perf_counter() - start)
    logger.info(plan.summary(len(space.fixed)))
    for unit, option, row in zip(space.units, choice, errors, strict=True):
        measured = ", ".join(f"{name} {e:.3e}" for name, e in zip(space.auto.names, row, strict=True))
        logger.debug(
            "AutoScheme: %s -> %s (errors %s)", ", ".join(unit.layers), space.auto.names[option], measured
        )
    return plan


def head_options(space: SearchSpace) -> list[int]:
    """Each head's option: the most bits the budget leaves room for beside the cheapest choice
    of every searched unit (Intel keeps lm_head at high precision where it can)."""
    floor = space.fixed_bits + sum(min(u.costs) for u in space.units)
    chosen: list[int] = []
    for position, unit in enumerate(space.heads):
        rest = sum(min(u.costs) for u in space.heads[position + 1 :])
        by_bits = sorted(range(len(unit.costs)), key=lambda i: -space.auto.schemes[i].bits)
        fits = [i for i in by_bits if floor + unit.costs[i] + rest <= space.budget]
        if not fits:
            raise SchemeError(f"AutoScheme budget leaves no room for {unit.layers[0]} at any option")
        chosen.append(fits[0])
        floor += unit.costs[fits[0]]
    return chosen


def _plan(space: SearchSpace, picked: list[tuple[Unit, int]], seconds: float) -> SchemePlan:
    auto = space.auto
    chosen = {name: auto.names[i] for unit, i in picked for name in unit.layers}
    by_weights: Counter[int] = Counter()
    for unit, i in picked:
        by_weights[i] += unit.weights
    quantized = [i for i, _ in by_weights.most_common() if auto.schemes[i].is_quantized]
    default = auto.schemes[quantized[0]] if quantized else next(s for s in auto.schemes if s.is_quantized)
    bits = space.fixed_bits + sum(unit.costs[i] for unit, i in picked)
    if bits > space.budget:  # the solver keeps within it: a failure here is a bug
        raise AssertionError(f"AutoScheme plan of {bits} bits exceeds the budget of {space.budget}")
    layer_config: dict[str, SchemeLike] = dict(space.layer_config or {})
    layer_config.update({name: auto.schemes[i] for unit, i in picked for name in unit.layers})
    return SchemePlan(
        layer_config, default, chosen, bits, space.weights, space.budget / space.weights, seconds
    )
