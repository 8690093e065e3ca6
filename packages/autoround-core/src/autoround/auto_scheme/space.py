"""What the search chooses among: units of layers that take one scheme together, their cost under
each option, the layers whose scheme is fixed, and the bit budget.

* **Pinned** layers (named by a ``layer_config`` key, exact or pattern, by the layer plan's own
  rule) keep their scheme; so do decoder-block layers the plan keeps in 16 bits for their shape.
  Both count in the budget (Intel counts them the same way).
* **Units**: vLLM fuses q/k/v, gate/up (``w1``/``w3``) and all experts of one MoE block into one
  weight each; those are one unit, and so is each of ``AutoScheme.shared_layers``' groups
  (merged where they overlap). Every other searched layer is a unit of its own.
* **Heads**: layers outside the decoder blocks that the run quantizes (``lm_head`` with
  ``quant_lm_head``) are not measured by the block-wise search; each gets the option with the
  most bits the budget leaves room for (Intel keeps lm_head at >= 6 bits where it can).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from autoround.auto_scheme.bits import layer_bits
from autoround.auto_scheme.config import AutoScheme
from autoround.errors import SchemeError
from autoround.formats.preflight import FUSED_SETS
from autoround.layer_plan import LayerConfig, LayerPlan, pattern_to_regex, resolve
from autoround.modeling.blocks import linear_shape
from autoround.schemes import Scheme

_EXPERTS = re.compile(r"^(.*\.experts)\.\d+\.")
#: Intel snaps a target within this of an end of the range onto it.
SNAP = 1e-3


@dataclass(frozen=True)
class Unit:
    """Layers that take one scheme together, and their bits under each option (in order)."""

    layers: tuple[str, ...]
    costs: tuple[int, ...]
    weights: int


@dataclass(frozen=True)
class SearchSpace:
    """Everything the search needs from the model and the run, before any measurement.

    Attributes:
        auto: the request; plan: the layer plan with the first option standing in as default;
        layer_config: the run's own (its pins); units: the searched units, in model order;
        heads: quantized layers outside the blocks; fixed: pinned and 16-bit layers, counted at
        their own scheme (None: 16 bits), ``fixed_bits`` in all; weights: every counted weight;
        budget: ``int(weights * avg_bits)`` bits.
    """

    auto: AutoScheme
    plan: LayerPlan
    layer_config: LayerConfig | None
    units: tuple[Unit, ...]
    heads: tuple[Unit, ...]
    fixed: dict[str, Scheme | None]
    fixed_bits: int
    weights: int
    budget: int

    @property
    def moe(self) -> bool:
        """Whether the model has MoE experts (Intel calibrates the search on shorter samples)."""
        return any(_EXPERTS.match(name) for unit in self.units for name in unit.layers)

    def option_average(self, index: int) -> float:
        """The average bits with every searched layer (and head) at option ``index``."""
        bits = self.fixed_bits + sum(u.costs[index] for u in (*self.units, *self.heads))
        return bits / self.weights


def search_space(
    model: nn.Module,
    auto: AutoScheme,
    layer_config: LayerConfig | None = None,
    quant_lm_head: bool = False,
    block_names: Sequence[str] | None = None,
) -> SearchSpace:
    """The search space of ``auto`` on ``model`` (MoE experts already unfused).

    Raises:
        SchemeError: no layer left to search, or ``avg_bits`` outside the range the options allow
            on this model with these pins (naming each option's average), before any work.
    """
    placeholder = next(s for s in auto.schemes if s.is_quantized)
    names = list(block_names) if block_names is not None else None
    plan = resolve(model, placeholder, layer_config, quant_lm_head, names)
    shapes = {name: linear_shape(model.get_submodule(name)) for name in plan.layers}
    leaves = {n for n, m in model.named_modules() if not list(m.children())}
    pinned = pinned_layers(list(plan.layers), layer_config or {}, leaves)
    fixed: dict[str, Scheme | None] = {}
    searched: list[str] = []
    heads: list[str] = []
    for name, decision in plan.layers.items():
        in_blocks = any(name.startswith(block + ".") for block in plan.block_names)
        if name in pinned or (in_blocks and decision.scheme is None):
            if in_blocks or decision.scheme is not None:
                fixed[name] = decision.scheme
        elif in_blocks:
            searched.append(name)
        elif decision.scheme is not None:
            heads.append(name)
    if not searched:
        raise SchemeError("AutoScheme has no layer to choose a scheme for: layer_config pins every one")
    groups = unit_groups(searched, plan, auto.shared_layers or ())
    units = tuple(_unit(group, shapes, auto) for group in groups)
    head_units = tuple(_unit([name], shapes, auto) for name in heads)
    fixed_bits = sum(layer_bits(s, *shapes[n], auto.ignore_scale_zp_bits) for n, s in fixed.items())
    weights = sum(u.weights for u in (*units, *head_units)) + sum(math.prod(shapes[n]) for n in fixed)
    space = SearchSpace(auto, plan, layer_config, units, head_units, fixed, fixed_bits, weights, 0)
    return dataclasses.replace(space, budget=int(weights * _checked_target(space)))


def _unit(layers: Sequence[str], shapes: dict[str, tuple[int, int]], auto: AutoScheme) -> Unit:
    costs = tuple(
        sum(layer_bits(scheme, *shapes[n], auto.ignore_scale_zp_bits) for n in layers)
        for scheme in auto.schemes
    )
    return Unit(tuple(layers), costs, sum(math.prod(shapes[n]) for n in layers))


def _checked_target(space: SearchSpace) -> float:
    """``avg_bits`` (snapped onto an end of the range within :data:`SNAP`), refused outside it."""
    parts = (*space.units, *space.heads)
    low = (space.fixed_bits + sum(min(u.costs) for u in parts)) / space.weights
    high = (space.fixed_bits + sum(max(u.costs) for u in parts)) / space.weights
    target = float(space.auto.avg_bits)
    if abs(target - low) < SNAP:
        return low
    if abs(target - high) < SNAP:
        return high
    if not low <= target <= high:
        averages = ", ".join(
            f"{name}={space.option_average(i):.3f}" for i, name in enumerate(space.auto.names)
        )
        counted = (
            "scale and zero-point bits ignored"
            if space.auto.ignore_scale_zp_bits
            else "scales and zero points included"
        )
        raise SchemeError(
            f"AutoScheme avg_bits={target} is outside the range [{low:.3f}, {high:.3f}] its options allow on "
            f"this model ({counted}; every searched layer at one option: {averages}; {len(space.fixed)} "
            f"pinned or 16-bit layers count at their own bits): pass an avg_bits inside it, or other options"
        )
    return target


def pinned_layers(layers: Sequence[str], layer_config: LayerConfig, leaves: Iterable[str] = ()) -> set[str]:
    """The layers a ``layer_config`` key names: exact names, else patterns (the layer plan's rule;
    a key naming a module that is not Linear-like names nothing)."""
    pinned: set[str] = set()
    present, leaf_names = set(layers), set(leaves)
    for key in layer_config:
        if key in present:
            pinned.add(key)
        elif key not in leaf_names:
            regex = pattern_to_regex(key)
            pinned.update(name for name in layers if regex.search(name))
    return pinned


def fusion_key(name: str) -> str:
    """The weight vLLM fuses ``name`` into: all experts of one MoE block are one; q/k/v and
    gate/up (``w1``/``w3``) of one module are one; any other layer stands alone."""
    experts = _EXPERTS.match(name)
    if experts:
        return experts.group(1)
    parent, _, leaf = name.rpartition(".")
    for fused, parts in FUSED_SETS:
        if leaf in parts:
            return f"{parent}.{fused}"
    return name


def unit_groups(searched: Sequence[str], plan: LayerPlan, shared: Sequence[Sequence[str]]) -> list[list[str]]:
    """The searched layers in groups sharing one scheme, in model order: vLLM's fused weights and
    ``shared`` (Intel's ``shared_layers`` rule), merged where they overlap."""
    parent = {name: name for name in searched}

    def find(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    def join(members: Iterable[str]) -> None:
        kept = [m for m in members if m in parent]
        for other in kept[1:]:
            parent[find(other)] = find(kept[0])

    by_key: dict[str, list[str]] = {}
    for name in searched:
        by_key.setdefault(fusion_key(name), []).append(name)
    for members in by_key.values():
        join(members)
    for group in shared_groups(list(plan.layers), plan.block_names, shared):
        join(group)
    grouped: dict[str, list[str]] = {}
    for name in searched:
        grouped.setdefault(find(name), []).append(name)
    return list(grouped.values())


def shared_groups(
    layers: Sequence[str], block_lists: Sequence[str], shared: Sequence[Sequence[str]]
) -> list[list[str]]:
    """Intel's ``shared_layers`` rule: a group of exact layer names is one group; any other group
    is, in each decoder block, the block's layers that one of its entries names exactly, matches
    as a regex (``re.search``) or contains as a substring."""
    present = set(layers)
    blocks = list(dict.fromkeys(b for n in layers if (b := _block_of(n, block_lists)) is not None))
    groups: list[list[str]] = []
    for group in shared:
        if all(name in present for name in group):
            groups.append(list(group))
            continue
        for block in blocks:
            in_block = [n for n in layers if n.startswith(f"{block}.")]
            matched = [n for n in in_block if any(n == p or _matches(p, n) for p in group)]
            if matched:
                groups.append(matched)
    return groups


def _matches(pattern: str, name: str) -> bool:
    try:
        if re.search(pattern, name):
            return True
    except re.error:
        pass
    return pattern in name


def _block_of(name: str, block_lists: Sequence[str]) -> str | None:
    for blocks in block_lists:
        if name.startswith(blocks + "."):
            index = name[len(blocks) + 1 :].split(".", 1)[0]
            return f"{blocks}.{index}"
    return None
