"""Which tensors of a checkpoint are quantized, decided from the safetensors headers and
``config.json`` alone, by the rule the model-based path applies to the built model.

The model-based path (:func:`autoround.layer_plan.resolve`) quantizes the Linear layers inside
the decoder blocks (the longest ``nn.ModuleList`` whose entries all hold Linear layers), leaves
layers outside them in 16 bits unless ``layer_config`` or ``quant_lm_head`` names them, and keeps
layers whose widths are not multiples of 32 in 16 bits. Here the same function
(:func:`~autoround.layer_plan.resolve_layers`) decides, over the Linear layers read off the
tensor names:

* a Linear layer is a 2-D floating-point ``<layer>.weight`` that is neither an embedding (a last
  name part containing ``embed``, except ``embed_out``, or ``wte`` / ``wpe``) nor a MoE router
  (a matrix beside an ``experts.<i>`` list with one row per expert: a router module in
  transformers, stored dense and listed as 16-bit, as the model-based writer lists it);
* the decoder blocks are the longest numbered list (``model.layers.<i>``) whose every entry holds
  such a layer (lists inside a list entry, and expert lists, are not candidates);
* checkpoints the rule cannot read correctly are refused, naming the tensor: fused (3-D) MoE
  experts, GPT-2-style ``Conv1D`` models (their weights are stored transposed), and a tied
  ``lm_head`` that would be quantized (it has no tensor of its own).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autoround.errors import SchemeError, UnsupportedLayerError
from autoround.formats.preflight import format_conflicts, fusion_conflicts, require_quantized
from autoround.layer_plan import LayerConfig, LayerDecision, LayerPlan, resolve_layers
from autoround.model_free.routing import MODEL_FREE_FORMAT
from autoround.model_free.source import Shard, TensorInfo
from autoround.schemes import Scheme

#: model_type values whose Linear-like layers are transformers' ``Conv1D`` ((in, out) weights).
CONV1D_MODEL_TYPES = frozenset(
    {
        "gpt2",
        "openai-gpt",
        "imagegpt",
        "decision_transformer",
        "clvp",
        "clvp_decoder",
        "clvp_encoder",
        "convbert",
    }
)
#: Last name parts of embedding matrices that do not contain "embed".
EMBEDDING_NAMES = ("wte", "wpe")
#: The name transformers gives a model's output layer.
LM_HEAD = "lm_head"
_LIST_ENTRY = re.compile(r"\.(\d+)(?=\.)")
_NUMBERED_PART = re.compile(r"(^|\.)\d+(\.|$)")


@dataclass(frozen=True)
class CheckpointPlan:
    """What to do with each tensor of a checkpoint.

    ``layer_plan`` holds every Linear layer's decision (as the model-based path's plan does);
    ``weights`` maps each quantized weight tensor to its layer and scheme; the biases of
    quantized layers are stored as float16 (``fp16_biases``); ``dropped`` tensors are not
    written (a tied ``lm_head`` stored twice); ``dense_block_matrices`` are the routers.
    """

    layer_plan: LayerPlan
    weights: dict[str, tuple[str, Scheme]]
    fp16_biases: frozenset[str]
    dropped: frozenset[str]
    dense_block_matrices: tuple[str, ...]


def plan_checkpoint(
    shards: Sequence[Shard],
    config: Mapping[str, Any],
    scheme: Scheme,
    layer_config: LayerConfig | None = None,
    ignore_layers: str | Sequence[str] = (),
    quant_lm_head: bool = False,
) -> CheckpointPlan:
    """Plan every tensor of ``shards``; refuses what cannot be quantized correctly, and a plan
    the ``auto_round`` format or vLLM's fused layers cannot take (before any tensor is read)."""
    _refuse_conv1d(config)
    infos = [info for shard in shards for info in shard.tensors]
    _refuse_fused_experts(infos)
    routers = _routers(infos)
    shapes = _linear_shapes(infos, routers)
    blocks = find_blocks([info.name for info in infos], shapes)
    tied = _tied_lm_head(config, infos)
    candidates = {**shapes, LM_HEAD: (0, 0)} if tied and LM_HEAD not in shapes else shapes
    leaves = {info.name.rpartition(".")[0] for info in infos}
    plan = resolve_layers(candidates, blocks, scheme, layer_config, quant_lm_head, leaves)
    plan = _ignore(plan, ignore_layers, [info.name for info in infos])
    if tied:
        _refuse_quantized(plan, LM_HEAD)
    plan = LayerPlan({n: d for n, d in plan.layers.items() if n in shapes}, blocks)
    check_plan(plan)
    quantized = plan.quantized()
    dropped = {f"{LM_HEAD}.weight"} if tied and LM_HEAD in shapes else set()
    return CheckpointPlan(
        plan,
        {f"{name}.weight": (name, s) for name, s in quantized.items()},
        frozenset(f"{name}.bias" for name in quantized) & {info.name for info in infos},
        frozenset(dropped),
        tuple(name for name in routers if any(name.startswith(b + ".") for b in blocks)),
    )


def check_plan(plan: LayerPlan) -> None:
    """Refuse a plan that quantizes nothing, or that ``auto_round`` or vLLM's fused layers
    cannot take (what the model-based path's pre-flight checks, without the model)."""
    require_quantized(plan)
    problems = format_conflicts(plan, MODEL_FREE_FORMAT) + fusion_conflicts(plan)
    if problems:
        shown = "\n  - ".join(problems[:20])
        raise SchemeError(
            f"the layer configuration cannot be saved and served as planned:\n  - {shown}\n"
            f"Fix: give the parts of each fused weight the same scheme in layer_config (e.g. one "
            f"pattern matching q_proj|k_proj|v_proj)"
        )


def find_blocks(tensor_names: Iterable[str], linear: Iterable[str]) -> tuple[str, ...]:
    """The decoder block list: the numbered list with the most entries, all holding a Linear
    layer (the first such list in tensor order on a tie), as ``find_block_names`` picks the
    longest ``nn.ModuleList`` of Linear-bearing blocks."""
    entries = _list_entries(tensor_names)
    with_linear = _list_entries(name + "." for name in linear)
    candidates = [prefix for prefix, found in entries.items() if with_linear.get(prefix) == found]
    if not candidates:
        raise UnsupportedLayerError(
            f"no decoder block list found in the checkpoint's tensor names: looked for a numbered "
            f"list (model.layers.<i>) whose every entry holds a Linear weight; lists seen: "
            f"{sorted(entries) or 'none'}"
        )
    best = max(len(entries[prefix]) for prefix in candidates)
    return (next(prefix for prefix in candidates if len(entries[prefix]) == best),)


def _list_entries(names: Iterable[str]) -> dict[str, set[str]]:
    """Numbered list prefix -> the indices found under it (expert lists and nested lists left out)."""
    found: dict[str, set[str]] = {}
    for name in names:
        for match in _LIST_ENTRY.finditer(name):
            prefix = name[: match.start()]
            if prefix.endswith("experts") or _NUMBERED_PART.search(prefix):
                continue
            found.setdefault(prefix, set()).add(match.group(1))
    return found


def _linear_shapes(infos: Sequence[TensorInfo], routers: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(out, in) of every Linear layer, in tensor order."""
    shapes = {}
    for info in infos:
        layer, _, kind = info.name.rpartition(".")
        if kind != "weight" or len(info.shape) != 2 or not info.is_float:
            continue
        if _is_embedding(layer) or layer in routers:
            continue
        shapes[layer] = (info.shape[0], info.shape[1])
    return shapes


def _is_embedding(layer: str) -> bool:
    leaf = layer.rpartition(".")[2]
    return ("embed" in leaf and leaf != "embed_out") or leaf in EMBEDDING_NAMES


def _routers(infos: Sequence[TensorInfo]) -> list[str]:
    """Matrices beside a list of experts with one row per expert (MoE routers)."""
    experts: dict[str, set[str]] = {}
    for info in infos:
        match = re.match(r"(.*)\.experts\.(\d+)\.", info.name)
        if match:
            experts.setdefault(match.group(1), set()).add(match.group(2))
    found = []
    for info in infos:
        layer, _, kind = info.name.rpartition(".")
        parent = layer.rpartition(".")[0]
        count = len(experts.get(parent, ()))
        if kind == "weight" and len(info.shape) == 2 and count and info.shape[0] == count:
            found.append(layer)
    return found


def _ignore(plan: LayerPlan, ignore_layers: str | Sequence[str], tensor_names: list[str]) -> LayerPlan:
    """Intel's ``ignore_layers``: each entry an exact layer name or a substring of layer names
    (``layers.1`` as ``layers.1.`` where modules sit under it, so it misses ``layers.10``); the
    matched layers stay in 16 bits whatever ``layer_config`` says."""
    entries = ignore_layers.split(",") if isinstance(ignore_layers, str) else list(ignore_layers)
    patterns = []
    for entry in (e.replace(" ", "") for e in entries):
        if entry and entry[-1].isdigit() and any(entry + "." in name for name in tensor_names):
            entry += "."
        if entry:
            patterns.append(entry)
    layers = dict(plan.layers)
    for name in layers:
        if any(name == p or p in name for p in patterns):
            layers[name] = LayerDecision(None, "ignore_layers")
    return LayerPlan(layers, plan.block_names)


def _refuse_quantized(plan: LayerPlan, tied_head: str) -> None:
    decision = plan.layers.get(tied_head)
    if decision is not None and decision.scheme is not None:
        raise UnsupportedLayerError(
            f"{tied_head} is tied to the input embedding (config.json's tie_word_embeddings, or no "
            f"{tied_head} tensor); quantizing it model-free is not built ({decision.reason}): leave "
            f"it out, or quantize with the model loaded (--disable_model_free)"
        )


def _refuse_conv1d(config: Mapping[str, Any]) -> None:
    model_type = str(config.get("model_type", ""))
    if model_type in CONV1D_MODEL_TYPES:
        raise UnsupportedLayerError(
            f"model_type {model_type!r} stores its Linear layers as transformers' Conv1D ((in, out) "
            f"weights), which model-free RTN cannot tell from its tensors: quantize with the model "
            f"loaded (--disable_model_free)"
        )


def _refuse_fused_experts(infos: Sequence[TensorInfo]) -> None:
    fused = [i for i in infos if len(i.shape) > 2 and i.is_float and "experts" in i.name]
    if fused:
        raise UnsupportedLayerError(
            f"the checkpoint stores MoE experts fused ({fused[0].name}, shape {list(fused[0].shape)}); "
            f"model-free RTN does not split them into per-expert layers yet: quantize with the model "
            f"loaded (--disable_model_free), which does"
        )


def _tied_lm_head(config: Mapping[str, Any], infos: Sequence[TensorInfo]) -> bool:
    """Whether ``lm_head`` is the input embedding: the config says so, or says nothing and the
    checkpoint has no ``lm_head`` tensor."""
    texts = [config, *(v for k, v in config.items() if k.endswith("text_config") and isinstance(v, Mapping))]
    flags = {c.get("tie_word_embeddings") for c in texts} - {None}
    if True in flags:
        return True
    return not flags and not any(info.name == f"{LM_HEAD}.weight" for info in infos)
