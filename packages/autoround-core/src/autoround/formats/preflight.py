"""Pre-flight: refuse, before any tuning starts, a layer plan the chosen formats or the runtimes
that serve them cannot load, naming the layers, the formats that can store it and the fix.

* A format stores certain bit widths, data types, symmetries and group sizes only: its entry in
  :data:`~autoround.formats.registry.FORMATS` says which (``Format.problems``). The schemes a run
  names (its default and ``layer_config``'s) are checked before the model is loaded
  (:func:`check_schemes`); the plan, with the layers' widths, after it is loaded and before any
  tuning (:func:`check_plan`).
* vLLM fuses some layers into one weight: q/k/v into ``qkv_proj``, gate/up into
  ``gate_up_proj`` (``w1``/``w3`` in Mixtral's names), and all experts of a MoE layer into one
  tensor. The parts of a fused weight must share one scheme (or all stay unquantized).
* Activation quantization (``act_bits`` below 16) of a kind not built (the registry
  :data:`~autoround.dtypes.act_kinds.ACT_KINDS`), and 2-D weight blocks (``block_shape``) of a
  data type without tiles, are refused: :func:`require_quantized` in the plan (every run's first
  check) and :func:`check_schemes` in the named schemes, naming the scheme (NotImplementedError,
  :func:`~autoround.schemes.require_built`); so is a built kind in a format that does not store
  it (``Capabilities.activations``: per-token FP8 in ``llm_compressor`` only, per-token INT4 and
  MXINT4's in ``auto_round`` only; per-token INT8, MX, FP8_BLOCK's per-group FP8 and the
  calibrated ones, FP8_STATIC's ``input_scale`` and NVFP4's ``input_global_scale``, in both),
  naming the formats that do.
* A layer a format's layout cannot hold beside the run's default scheme (``Format.check_mixing``:
  ``auto_round`` picks one packing from the default scheme: integer beside float layers, int
  activations beside a weight-only default) is refused here too, before any work.
* FP8's 2-D weight blocks (FP8_BLOCK, ``block_shape`` (128, 128): one scale per tile) are
  quantized by every algorithm and stored by the formats whose ``Capabilities.blocks`` says so
  (``llm_compressor``: compressed-tensors' ``block`` strategy); every other format refuses them,
  naming the formats that can. Tiles are not row groups: a partial edge tile is no partial group.
* The float data types (``fp`` FP8, ``nv_fp`` NVFP4, ``mx_fp`` / ``mx_fp_rceil`` MXFP4 and MXFP8)
  are stored by ``llm_compressor`` and ``auto_round`` (``mx_int`` 4-bit, MXINT4: ``auto_round``
  only); what no format stores (MX 6-bit, ``mx_int`` 2/8-bit,
  ``mx_fp6e3m2``, ``mx_fp8e5m2``, ...) is refused by every format's ``Capabilities``. Either way
  the message names the data type and the formats that can store it (or says that none can).
* Stock vLLM cannot load a layer whose input width the group size does not divide (its last
  group is partial); autoround-vllm can. That is a warning, not an error.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence

from torch import nn

from autoround.errors import SchemeError
from autoround.formats.base import Format
from autoround.formats.combine import entries
from autoround.formats.registry import FORMATS, check_formats, writable_formats
from autoround.layer_plan import LayerConfig, LayerPlan
from autoround.modeling.blocks import linear_shape
from autoround.schemes import UNQUANTIZED_BITS, Scheme, parse_scheme, require_built

logger = logging.getLogger(__name__)

#: Layer-name endings vLLM fuses into one weight, as (fused name, parts).
FUSED_SETS = (
    ("qkv_proj", ("q_proj", "k_proj", "v_proj")),
    ("gate_up_proj", ("gate_proj", "up_proj")),
    ("w13", ("w1", "w3")),
)
_EXPERT = re.compile(r"\.experts\.\d+\.")


def _describe(scheme: Scheme | None) -> str:
    if scheme is None:
        return "16-bit"
    return f"W{scheme.bits}G{scheme.group_size}{'' if scheme.sym else ' asym'}"


def _fusion_key(name: str) -> str | None:
    """The fused weight a layer belongs to in vLLM, or None if it stands alone."""
    parent, _, leaf = name.rpartition(".")
    key = _EXPERT.sub(".experts.*.", name) if _EXPERT.search(name) else None
    for fused, parts in FUSED_SETS:
        if leaf in parts:
            return f"{_EXPERT.sub('.experts.*.', parent + '.')}{fused}" if key else f"{parent}.{fused}"
    return key


def fusion_conflicts(plan: LayerPlan) -> list[str]:
    """One message per fused weight whose parts were given different schemes."""
    groups: dict[str, dict[str, Scheme | None]] = defaultdict(dict)
    for name, decision in plan.layers.items():
        key = _fusion_key(name)
        if key is not None:
            groups[key][name] = decision.scheme
    problems = []
    for key, members in sorted(groups.items()):
        kinds = {_describe(s) for s in members.values()}
        if len(kinds) > 1:
            listing = ", ".join(f"{n} ({_describe(s)})" for n, s in sorted(members.items())[:6])
            problems.append(f"{key} is one fused weight in vLLM but its parts differ: {listing}")
    return problems


def format_conflicts(
    plan: LayerPlan,
    formats: str | Sequence[str],
    model: nn.Module | None = None,
    default: Scheme | None = None,
) -> list[str]:
    """One message per layer a format cannot store (an unknown format raises FormatError); with
    the run's ``default`` scheme, beside it too."""
    return [why for entry in entries(formats).values() for why in entry.problems(plan, model, default)]


def able_formats(plan: LayerPlan, model: nn.Module | None = None, default: Scheme | None = None) -> list[str]:
    """The writable formats that can store every layer of ``plan`` (beside ``default``, if given)."""
    return [name for name in writable_formats() if not FORMATS[name].problems(plan, model, default)]


def _named_schemes(scheme: Scheme, layer_config: LayerConfig | None) -> dict[str, Scheme]:
    """The run's default scheme and every quantizing scheme ``layer_config`` names, by where named."""
    named = {"scheme": scheme}
    for key, value in (layer_config or {}).items():
        try:
            chosen = scheme.replace(**dict(value)) if isinstance(value, Mapping) else parse_scheme(value)
        except (SchemeError, TypeError):
            continue  # the layer plan reports it, naming the key
        if chosen.is_quantized:
            named[f"layer_config[{key!r}]"] = chosen
    return named


def check_schemes(
    scheme: Scheme, layer_config: LayerConfig | None, formats: str | Sequence[str]
) -> tuple[str, ...]:
    """Refuse, before the model is loaded, a scheme some format cannot store; returns the format keys.

    Raises:
        FormatError: an unknown or read-only format (listing the allowed ones).
        NotImplementedError: a scheme that quantizes activations or tiles weights in 2-D blocks
            in a way not built.
        SchemeError: a scheme a format cannot store (2-D blocks included), naming the formats
            that can store them all.
    """
    writers = entries(formats)
    for where, chosen in _named_schemes(scheme, layer_config).items():
        require_built(chosen, where)
        _require_stored_activations(chosen, where, writers)
    named = {where: s for where, s in _named_schemes(scheme, layer_config).items() if s.is_quantized}
    problems = [
        f"{where} ({why}) cannot be stored in format {name!r} (it stores {entry.capabilities.describe()})"
        for name, entry in writers.items()
        for where, chosen in named.items()
        if (why := entry.capabilities.why_not(chosen)) is not None
    ]
    overrides = {where: s for where, s in named.items() if where != "scheme"}
    problems += [
        why
        for entry in writers.values()
        if entry.check_mixing is not None
        for why in entry.check_mixing(scheme, overrides)
    ]
    if problems:
        able = [n for n in writable_formats() if all(FORMATS[n].stores(s) for s in named.values())]
        raise SchemeError("; ".join(problems) + f"; {_able_words(able)}")
    return tuple(writers)


def _require_stored_activations(scheme: Scheme, where: str, writers: Mapping[str, Format]) -> None:
    """A built W8A8 scheme in a format that stores no activation arguments: not built there
    (NotImplementedError, as for the schemes no quantizer builds), naming the formats that can."""
    if scheme.is_weight_only:
        return
    refusing = [name for name, entry in writers.items() if not entry.capabilities.stores_activations(scheme)]
    if refusing:
        able = [n for n in writable_formats() if FORMATS[n].capabilities.stores_activations(scheme)]
        raise NotImplementedError(
            f"{where}: activation quantization (act_bits={scheme.act_bits}, act_data_type="
            f"{scheme.act_data_type!r}) is not built for format(s) {refusing}; "
            f"{_able_words(able)}; or act_bits={UNQUANTIZED_BITS} for the weight-only form"
        )


def _able_words(able: list[str], what: str = "can store it") -> str:
    """The formats that can store what was refused, in words (saying so where none can)."""
    if able:
        return f"formats that {what}: {able}"
    return f"formats that {what}: [] (none: choose schemes some format stores; `autoround list` shows them)"


def warn_partial_groups(model: nn.Module, plan: LayerPlan) -> None:
    """Say which layers stock vLLM could not load (a partial last group)."""
    partial = []
    for name, scheme in plan.quantized().items():
        in_features = linear_shape(model.get_submodule(name))[1]
        # A row narrower than the group is one whole group, not a partial one; tiles are no groups.
        if (
            scheme.block_shape is None
            and 0 < scheme.group_size < in_features
            and in_features % scheme.group_size
        ):
            partial.append(name)
    if partial:
        logger.warning(
            "%d layers have a partial last group (input width not divisible by the group size), e.g. %s: "
            "stock vLLM cannot load them; autoround-vllm and transformers can",
            len(partial),
            partial[0],
        )


def require_quantized(plan: LayerPlan) -> None:
    """Refuse a plan that leaves every layer in 16 bits (it would save no quantized checkpoint),
    or whose layers quantize activations or tile weights in 2-D blocks in a way not built
    (:func:`~autoround.schemes.require_built`'s NotImplementedError, naming a layer)."""
    for name, decision in plan.layers.items():
        if decision.scheme is not None:
            require_built(decision.scheme, f"layer {name}")
    if not plan.quantized():
        raise SchemeError(
            "the layer plan quantizes no layer (every layer stays in 16 bits): there is nothing to "
            "quantize, and a checkpoint without quantized layers is not a quantized checkpoint. "
            "Choose bits 2, 3, 4 or 8, or save the model itself with save_pretrained"
        )


def check_plan(
    model: nn.Module, plan: LayerPlan, formats: str | Sequence[str], default: Scheme | None = None
) -> None:
    """Raise SchemeError listing every problem (with the fix) before any work is done; ``default``:
    the run's scheme, which chooses a checkpoint's layout where a format has several."""
    require_quantized(plan)
    stored = format_conflicts(plan, formats, model, default)
    # vLLM fuses q/k/v and gate/up; runtimes that do not (llama.cpp) take differing parts
    vllm = any(r.startswith("vLLM") for name in check_formats(formats) for r in FORMATS[name].runtimes)
    problems = stored + (fusion_conflicts(plan) if vllm else [])
    if problems:
        shown = "\n  - ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        able = f" ({_able_words(able_formats(plan, model, default), 'store this plan')})" if stored else ""
        raise SchemeError(
            f"the layer configuration cannot be saved and served as planned:\n  - {shown}{more}\n"
            f"Fix: give the parts of each fused weight the same scheme in layer_config (e.g. one pattern "
            f"matching q_proj|k_proj|v_proj), and use schemes the format stores{able}."
        )
    warn_partial_groups(model, plan)
