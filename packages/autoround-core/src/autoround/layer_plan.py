"""Which scheme each layer of a model gets: the default, a ``layer_config`` override, or none.

``layer_config`` keys follow Intel auto-round's semantics: a key that is exactly a layer name
applies to that layer; any other key is a pattern matched with ``re.search`` against every
Linear-like layer name — a plain string (no regex characters) matches as a substring
("fuzzy"), one with regex characters (``.* ^ $ | ( ) [ ] ? +``) as a partial regex. Exact
names win over patterns; among patterns, later keys win. Values are a preset name, a
:class:`Scheme`, or a mapping of fields that override the default scheme (``{"bits": 16}``
keeps a layer unquantized).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from torch import nn

from autoround.errors import SchemeError
from autoround.modeling.blocks import find_block_names, is_linear_like, linear_shape
from autoround.schemes import Scheme, SchemeLike, parse_scheme

logger = logging.getLogger(__name__)

#: Packed layouts hold whole 32-bit words along both dimensions; Intel auto-round keeps layers
#: whose input or output width is not a multiple of this in 16 bits, and so do we.
PACK_MULTIPLE = 32

_REGEX_TOKENS = (".*", "^", "$", "|", "(", ")", "[", "]", "?", "+")

LayerConfig = Mapping[str, SchemeLike]


@dataclass(frozen=True)
class LayerDecision:
    """A layer's scheme (None: left in 16 bits) and why."""

    scheme: Scheme | None
    reason: str


@dataclass(frozen=True)
class LayerPlan:
    """The resolved decision for every Linear-like layer, and the decoder block lists."""

    layers: dict[str, LayerDecision]
    block_names: tuple[str, ...]

    def quantized(self) -> dict[str, Scheme]:
        """Layer name -> scheme, for the layers that get quantized."""
        return {n: d.scheme for n, d in self.layers.items() if d.scheme is not None}

    def in_block(self, block_prefix: str) -> dict[str, Scheme]:
        """Quantized layers under one block (``model.layers.3``), keyed by their full name."""
        prefix = block_prefix + "."
        return {n: s for n, s in self.quantized().items() if n.startswith(prefix)}

    def overrides(self, default: Scheme) -> dict[str, Scheme | None]:
        """Layers a checkpoint's reader would get wrong unless ``extra_config`` lists them.

        A reader assumes ``default`` inside the decoder blocks and 16 bits outside them, so this
        holds the block layers whose scheme differs from ``default`` and every quantized layer
        outside the blocks (``lm_head``), whatever its scheme.
        """
        out: dict[str, Scheme | None] = {}
        for name, decision in self.layers.items():
            in_blocks = any(name.startswith(block + ".") for block in self.block_names)
            assumed = default if in_blocks else None
            if decision.scheme != assumed:
                out[name] = decision.scheme
        return out


def pattern_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a layer_config key: substring match for plain names, partial regex otherwise."""
    if not any(tok in pattern for tok in _REGEX_TOKENS):
        return re.compile(re.escape(pattern))
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise SchemeError(f"layer_config key {pattern!r} is not a valid regular expression: {exc}") from exc


def _scheme_for(value: SchemeLike, default: Scheme, key: str) -> Scheme:
    try:
        if isinstance(value, Mapping):
            return default.replace(**dict(value))
        return parse_scheme(value)
    except SchemeError as exc:
        raise SchemeError(f"layer_config[{key!r}]: {exc}") from exc


def resolve(
    model: nn.Module,
    scheme: Scheme,
    layer_config: LayerConfig | None = None,
    quant_lm_head: bool = False,
    block_names: list[str] | None = None,
) -> LayerPlan:
    """Decide every Linear-like layer's scheme.

    Layers inside the decoder blocks get ``scheme``; layers outside them (``lm_head``) stay in
    16 bits unless ``layer_config`` names them or ``quant_lm_head`` is set.
    """
    blocks = tuple(block_names or find_block_names(model))
    shapes = {n: linear_shape(m) for n, m in model.named_modules() if is_linear_like(m)}
    leaves = {n for n, m in model.named_modules() if not list(m.children())}
    _log_left_alone(model)
    return resolve_layers(shapes, blocks, scheme, layer_config, quant_lm_head, leaves)


def resolve_layers(
    shapes: Mapping[str, tuple[int, int]],
    blocks: tuple[str, ...],
    scheme: Scheme,
    layer_config: LayerConfig | None = None,
    quant_lm_head: bool = False,
    leaves: AbstractSet[str] = frozenset(),
) -> LayerPlan:
    """:func:`resolve` on names alone: ``shapes`` is (out, in) of every Linear-like layer (in the
    model's order), ``blocks`` the decoder block lists, ``leaves`` the names of modules without
    children (a ``layer_config`` key naming one that is not Linear-like is ignored, with a
    warning). Model-free quantization plans a checkpoint's tensors with it."""
    decisions = {name: _default_decision(name, scheme, blocks, quant_lm_head) for name in shapes}
    for name, decision in _overrides(list(shapes), scheme, layer_config or {}, leaves).items():
        decisions[name] = decision
    for name, decision in decisions.items():
        shape = shapes[name]
        if decision.scheme is not None and any(dim % PACK_MULTIPLE for dim in shape):
            logger.info("%s stays in 16 bits: shape %s is not a multiple of %d", name, shape, PACK_MULTIPLE)
            decisions[name] = LayerDecision(None, f"out x in = {shape} not a multiple of {PACK_MULTIPLE}")
    return LayerPlan(decisions, blocks)


def _default_decision(
    name: str, scheme: Scheme, blocks: tuple[str, ...], quant_lm_head: bool
) -> LayerDecision:
    if any(name.startswith(block + ".") for block in blocks):
        return _decision(scheme, "default scheme")
    if quant_lm_head and name.split(".")[-1] == "lm_head":
        return _decision(scheme, "quant_lm_head")
    return LayerDecision(None, "outside the decoder blocks (name it in layer_config to quantize it)")


def _decision(scheme: Scheme, reason: str) -> LayerDecision:
    if not scheme.is_quantized:
        return LayerDecision(None, f"{reason}: {scheme.bits}-bit, kept unquantized")
    return LayerDecision(scheme, reason)


def _overrides(
    linear_names: list[str], default: Scheme, layer_config: LayerConfig, leaves: AbstractSet[str]
) -> dict[str, LayerDecision]:
    exact: dict[str, LayerDecision] = {}
    by_pattern: dict[str, LayerDecision] = {}
    linear_set = set(linear_names)
    for key, value in layer_config.items():
        chosen = _scheme_for(value, default, key)
        if key in linear_set:
            exact[key] = _decision(chosen, f"layer_config[{key!r}]")
            continue
        if key in leaves:
            logger.warning("layer_config: %r is not a Linear-like layer; its setting is ignored", key)
            continue
        regex = pattern_to_regex(key)
        matched = [n for n in linear_names if regex.search(n)]
        if not matched:
            logger.warning("layer_config: %r matches no Linear-like layer; check for typos", key)
        for name in matched:
            by_pattern[name] = _decision(chosen, f"layer_config[{key!r}]")
    return {**by_pattern, **exact}


def _log_left_alone(model: nn.Module) -> None:
    """Say once which kinds of weight-bearing modules quantization leaves alone, and why."""
    kinds = Counter(
        type(m).__name__
        for m in model.modules()
        if not is_linear_like(m) and not list(m.children()) and any(True for _ in m.parameters(recurse=False))
    )
    if kinds:
        summary = ", ".join(f"{count} x {kind}" for kind, count in sorted(kinds.items()))
        logger.info("left in 16 bits (not Linear-like): %s", summary)


def describe(plan: LayerPlan) -> dict[str, Any]:
    """A small summary for logs: how many layers per scheme, and how many left alone."""
    counts = Counter(
        f"W{d.scheme.bits}G{d.scheme.group_size}{'' if d.scheme.sym else 'asym'}" if d.scheme else "16-bit"
        for d in plan.layers.values()
    )
    return dict(counts)
