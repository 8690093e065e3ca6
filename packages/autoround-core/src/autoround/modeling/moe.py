"""Fused MoE experts split into one small MLP of ``nn.Linear`` layers per expert.

transformers 5 stores a MoE layer's experts as 3-D parameters (``gate_up_proj`` (E, 2I, H),
``down_proj`` (E, H, I)). Quantization works on Linear layers and checkpoints name experts one
by one (``mlp.experts.3.gate_proj``), so :func:`unfuse_experts` swaps each fused module for an
:class:`UnfusedExperts` computing the same thing with ``nn.Linear``; routers are not touched.

Fused modules are found by their parameters and forward (hidden states, expert indices, routing
weights); their layout comes from the flags of transformers' ``@use_experts_implementation``
(``has_gate``, ``is_concatenated``, ``is_transposed``, ``has_bias``), their gating from the
class's own ``_apply_gate``; :data:`CONVERTERS` lists the few classes that differ otherwise.
Linear names follow the original checkpoints, read from transformers' weight-conversion mapping
(Mixtral ``w1``/``w3``/``w2``; else ``gate_proj``/``up_proj``/``down_proj``).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from types import SimpleNamespace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


@cache
def _default_apply_gate() -> Callable[..., Any] | None:
    """transformers' default gate, imported on first use: importing its MoE integration takes
    seconds, which every ``import autoround`` (the CLI, model-free runs) would otherwise pay."""
    try:
        from transformers.integrations.moe import _default_apply_gate as default
    except ImportError:  # pragma: no cover - older transformers: every gate is treated as custom
        return None
    return default


#: (gate, up, down) Linear names when the architecture's checkpoint names are unknown.
DEFAULT_NAMES: tuple[str, str, str] = ("gate_proj", "up_proj", "down_proj")

Accumulate = Literal["hidden", "weights"]


@dataclass(frozen=True)
class ExpertsConverter:
    """How one fused-experts class differs from the common transformers layout.

    ``accumulate``: the dtype the expert outputs are summed in, that of the hidden states
    (most models) or of the routing weights (NemotronH). ``unsupported``: why the class is
    left fused (its forward cannot be reproduced with Linear layers).
    """

    accumulate: Accumulate = "hidden"
    names: tuple[str, str, str] | None = None
    unsupported: str = ""


#: Fused-experts class name -> how it differs. Classes not listed use the common layout.
CONVERTERS: dict[str, ExpertsConverter] = {
    "NemotronHExperts": ExpertsConverter(accumulate="weights"),
    "OpenAIPrivacyFilterExperts": ExpertsConverter(unsupported="runs every projection in float32"),
}


class ExpertMLP(nn.Module):
    """One expert: ``down(gate_fn(gate(x), up(x)))`` or ``down(act(up(x)))`` without a gate."""

    def __init__(
        self,
        names: tuple[str | None, str, str],
        layers: tuple[nn.Linear | None, nn.Linear, nn.Linear],
        act_fn: Any,
        apply_gate: Any = None,
        interleaved: bool = False,
    ) -> None:
        super().__init__()
        self.gate_name, self.up_name, self.down_name = names
        for name, layer in zip(names, layers, strict=True):
            if name is not None:
                self.add_module(name, layer)
        self.act_fn = act_fn
        self.apply_gate = apply_gate  # the fused class's own non-default ``_apply_gate``, bound
        self.interleaved = interleaved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.get_submodule(self.up_name)(x)
        if self.gate_name is None:
            hidden = self.act_fn(up)
        else:
            gate = self.get_submodule(self.gate_name)(x)
            if self.apply_gate is None:
                hidden = self.act_fn(gate) * up
            elif self.interleaved:
                hidden = self.apply_gate(torch.stack((gate, up), dim=-1).flatten(-2))
            else:
                hidden = self.apply_gate(torch.cat((gate, up), dim=-1))
        return self.get_submodule(self.down_name)(hidden)


class UnfusedExperts(nn.Module):
    """Drop-in for a fused-experts module: same forward arguments, same result.

    Experts are children named ``0`` .. ``E-1`` (so layers read ``mlp.experts.3.gate_proj``).
    It is deliberately not an ``nn.ModuleList``: :func:`find_block_names` takes the longest
    ModuleList of Linear-bearing modules for the decoder blocks, and 128 experts outnumber
    48 layers.
    """

    def __init__(
        self, experts: list[ExpertMLP], arg_names: tuple[str, str, str], accumulate: Accumulate, source: str
    ) -> None:
        super().__init__()
        for index, expert in enumerate(experts):
            self.add_module(str(index), expert)
        self.num_experts = len(experts)
        self.arg_names = arg_names
        self.accumulate = accumulate
        self.source = source  # the fused class this replaced, for logs and reprs

    def __len__(self) -> int:
        return self.num_experts

    def __getitem__(self, index: int) -> ExpertMLP:
        return self.get_submodule(str(index))  # type: ignore[return-value]

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        values = dict(zip(self.arg_names, args, strict=False)) | kwargs
        hidden_states, top_k_index, top_k_weights = (values[name] for name in self.arg_names)
        dtype = top_k_weights.dtype if self.accumulate == "weights" else hidden_states.dtype
        final = torch.zeros_like(hidden_states, dtype=dtype)
        with torch.no_grad():
            mask = F.one_hot(top_k_index, num_classes=self.num_experts).permute(2, 1, 0)
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for expert_idx in hit:
            index = int(expert_idx[0])
            if index == self.num_experts:
                continue
            top_k_pos, token_idx = torch.where(mask[index])
            out = self[index](hidden_states[token_idx]) * top_k_weights[token_idx, top_k_pos, None]
            final.index_add_(0, token_idx, out.to(final.dtype))
        return final.to(hidden_states.dtype)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, from={self.source}"


def _is_3d(module: nn.Module, name: str) -> bool:
    param = module._parameters.get(name)
    return param is not None and param.dim() == 3


def _forward_args(module: nn.Module) -> tuple[str, str, str] | None:
    """The names of (hidden states, expert indices, routing weights) in the module's forward."""
    params = list(inspect.signature(inspect.unwrap(type(module).forward)).parameters.values())[1:]
    plain = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)]
    if len(plain) != 3 or len(plain) != len(params):
        return None
    return plain[0].name, plain[1].name, plain[2].name


def is_fused_experts(module: nn.Module) -> bool:
    """True for transformers' fused-experts modules (3-D expert weights, routed forward)."""
    if isinstance(module, UnfusedExperts) or not _is_3d(module, "down_proj"):
        return False
    if not (_is_3d(module, "gate_up_proj") or _is_3d(module, "up_proj")):
        return False
    return _forward_args(module) is not None


def checkpoint_names(model_types: list[str]) -> tuple[str, str, str]:
    """(gate, up, down) per-expert Linear names in the original checkpoints of ``model_types``.

    Read from transformers' weight-conversion mapping, which merges ``experts.*.<name>.weight``
    into the fused parameters on load; the first model type with such a mapping wins.
    """
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    except ImportError:  # pragma: no cover
        return DEFAULT_NAMES
    for model_type in model_types:
        roles: dict[str, str] = {}
        for conversion in get_checkpoint_conversion_mapping(model_type) or []:
            targets = getattr(conversion, "target_patterns", None) or []
            sources = getattr(conversion, "source_patterns", None) or []
            targets = [targets] if isinstance(targets, str) else list(targets)
            sources = [sources] if isinstance(sources, str) else list(sources)
            found = [m.group(1) for s in sources if (m := re.search(r"experts\.\*\.(\w+)\.weight", s))]
            if len(targets) != 1 or not found:
                continue
            if targets[0].endswith("experts.gate_up_proj") and len(found) == 2:
                roles["gate"], roles["up"] = found
            elif targets[0].endswith("experts.up_proj"):
                roles["up"] = found[0]
            elif targets[0].endswith("experts.down_proj"):
                roles["down"] = found[0]
        if "down" in roles:
            return roles.get("gate", DEFAULT_NAMES[0]), roles.get("up", DEFAULT_NAMES[1]), roles["down"]
    return DEFAULT_NAMES


def _halves(t: torch.Tensor | None, gated: bool, interleaved: bool) -> list[torch.Tensor | None]:
    """Rows of one expert's (out, in) weight or (out,) bias: [gate, up], or [all] without a gate."""
    if t is None or not gated:
        return [t, t] if gated else [t]
    return [t[0::2], t[1::2]] if interleaved else list(t.chunk(2, dim=0))


def _own(t: torch.Tensor, on_meta: bool) -> torch.Tensor:
    return t if on_meta else t.detach().clone(memory_format=torch.contiguous_format)


def _split(module: nn.Module, name: str, gated: bool) -> list[list[tuple[torch.Tensor, torch.Tensor | None]]]:
    """Per expert, the (weight (out, in), bias) of each part of a fused parameter; frees it."""
    fused: nn.Parameter = module._parameters[name]  # type: ignore[assignment]
    bias = module._parameters.get(f"{name}_bias") if module.has_bias else None  # type: ignore[attr-defined]
    transposed, interleaved = module.is_transposed, not module.is_concatenated  # type: ignore[attr-defined]
    on_meta = fused.device.type == "meta"
    out: list[list[tuple[torch.Tensor, torch.Tensor | None]]] = []
    for expert in range(fused.shape[0]):  # one expert at a time: its own copies, nothing else
        weight = fused[expert].t() if transposed else fused[expert]
        weights = _halves(weight, gated, interleaved)
        biases = _halves(bias[expert] if bias is not None else None, gated, interleaved)
        pairs = zip(weights, biases, strict=True)
        out.append(
            [(_own(w, on_meta), None if b is None else _own(b, on_meta)) for w, b in pairs if w is not None]
        )
    for tensor in (fused, bias):  # the copies are made: release the fused storage now
        if tensor is not None and not on_meta:
            tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)
    return out


def _linear(weight: torch.Tensor, bias: torch.Tensor | None, requires_grad: bool) -> nn.Linear:
    out_features, in_features = weight.shape
    layer = nn.Linear(in_features, out_features, bias=bias is not None, device="meta", dtype=weight.dtype)
    layer.weight = nn.Parameter(weight, requires_grad=requires_grad)
    if bias is not None:
        layer.bias = nn.Parameter(bias, requires_grad=requires_grad)
    return layer


def _convert(module: nn.Module, names: tuple[str, str, str], converter: ExpertsConverter) -> UnfusedExperts:
    for flag, default in (("has_bias", False), ("is_transposed", False), ("is_concatenated", True)):
        if not hasattr(module, flag):  # classes without @use_experts_implementation
            setattr(module, flag, default)
    gated = _is_3d(module, "gate_up_proj")
    requires_grad = bool(module.down_proj.requires_grad)
    custom_gate = getattr(type(module), "_apply_gate", None)
    apply_gate = None
    if gated and custom_gate is not None and custom_gate is not _default_apply_gate():
        state = {k: v for k, v in vars(module).items() if not k.startswith("_")}
        apply_gate = partial(custom_gate, SimpleNamespace(**state, **dict(module.named_children())))
    gate_up = _split(module, "gate_up_proj" if gated else "up_proj", gated)
    down = _split(module, "down_proj", gated=False)
    experts = []
    for first, (down_part,) in zip(gate_up, down, strict=True):
        layers = [_linear(w, b, requires_grad) for w, b in first] + [_linear(*down_part, requires_grad)]
        gate_layer, up_layer = (layers[0], layers[1]) if gated else (None, layers[0])
        experts.append(
            ExpertMLP(
                (names[0] if gated else None, names[1], names[2]),
                (gate_layer, up_layer, layers[-1]),
                getattr(module, "act_fn", None),
                apply_gate,
                interleaved=not module.is_concatenated,  # type: ignore[attr-defined]
            )
        )
    args = _forward_args(module)
    assert args is not None
    return UnfusedExperts(experts, args, converter.accumulate, type(module).__name__)


def unfuse_experts(model: nn.Module) -> int:
    """Replace every fused-experts module of ``model`` with per-expert Linear layers, in place.

    Returns how many modules were replaced (0 when called again). Works expert by expert and
    releases each fused parameter once its experts are copied, so the extra memory is one
    fused projection; on the meta device nothing is allocated.
    """
    found = [(name, module) for name, module in model.named_modules() if is_fused_experts(module)]
    model_config = getattr(model, "config", None)
    replaced = 0
    for name, module in found:
        converter = CONVERTERS.get(type(module).__name__, ExpertsConverter())
        if converter.unsupported:
            logger.warning("%s (%s) stays fused: %s", name, type(module).__name__, converter.unsupported)
            continue
        configs = (getattr(module, "config", None), model_config)
        model_types = [t for c in configs if (t := getattr(c, "model_type", None))]
        names = converter.names or checkpoint_names(model_types)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _convert(module, names, converter))
        replaced += 1
    if replaced:
        logger.info("unfused %d MoE experts module(s) into per-expert Linear layers", replaced)
    return replaced
