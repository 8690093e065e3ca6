"""What a checkpoint format is (:class:`Format`), and what every loader reads (:class:`CheckpointSpec`).

A format entry states once what it stores (:class:`Capabilities`), how it writes a quantized
model (``writer``; reading-only formats have none), which runtimes load it, which
``quantization_config`` dicts it reads (``can_read``; writing-only entries read none) and how it
turns one into a :class:`CheckpointSpec`: the per-layer schemes and the tensor layout on disk, in
auto-round's vocabulary, which is what the loaders, the vLLM method and the backends understand.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from autoround.dtypes.activations import ActKind, activation_kind, activation_problem
from autoround.errors import CheckpointError, FormatError
from autoround.io import atomic_dir
from autoround.modeling.blocks import linear_shape
from autoround.nn.input_scales import calibrated_kind
from autoround.schemes import PER_TENSOR, UNQUANTIZED_BITS, Scheme, require_weight_only

if TYPE_CHECKING:
    from torch import nn

    from autoround.layer_plan import LayerPlan
    from autoround.quantized_model import QuantizedModel

#: auto-round's ``quant_method``, the vocabulary every spec is expressed in.
QUANT_METHOD = "auto-round"
GPTQ_PACKING = "auto_round:auto_gptq"
PLAIN_PACKING = "auto_round"
#: Intel's name for AutoAWQ's gemm layout inside an auto-round config.
AWQ_PACKING = "auto_round:auto_awq"
#: What is subtracted from a zero point before it is stored, per packing format.
ZERO_OFFSET = {GPTQ_PACKING: 1, PLAIN_PACKING: 0}
SCHEME_KEYS = ("bits", "group_size", "sym", "data_type")
#: The activation fields a config states (read only where it quantizes activations).
ACT_KEYS = ("act_bits", "act_group_size", "act_sym", "act_data_type", "act_dynamic")

#: How a layer's tensors lie on disk: GPTQ's int32 layout (the one loaders compute with), or
#: AutoAWQ's gemm layout (repacked into GPTQ's once, at load time).
Layout = Literal["gptq", "awq"]


def quant_method_of(config: Mapping[str, Any]) -> str:
    """A config's ``quant_method`` as a plain string (transformers hands an enum); none = ours."""
    method = config.get("quant_method", QUANT_METHOD)
    return str(getattr(method, "value", method))


def blocks_and_extra(config: Mapping[str, Any]) -> tuple[tuple[str, ...], dict[str, dict[str, Any]]]:
    """``block_name_to_quantize`` (a comma-separated string or a list) and ``extra_config`` of an
    auto-round config, as every auto_round packing states them.

    Raises:
        CheckpointError: ``extra_config`` is not a mapping.
    """
    blocks = config.get("block_name_to_quantize") or ""
    if isinstance(blocks, str):
        blocks = [b.strip() for b in blocks.split(",") if b.strip()]
    extra = config.get("extra_config") or {}
    if not isinstance(extra, Mapping):
        raise CheckpointError(
            f"quantization_config.extra_config must be a mapping, got {type(extra).__name__}"
        )
    return tuple(blocks), {k: dict(v) for k, v in extra.items()}


@dataclass(frozen=True)
class CheckpointSpec:
    """What a checkpoint's ``quantization_config`` says, validated.

    ``packing_format`` and :attr:`zero_offset` describe the layers as loaders hold them (AWQ
    layers already repacked); ``layout`` says how they lie on disk; ``ignored_tensors`` are
    regular expressions of file tensors the layers do not hold (GPTQ's trivial ``g_idx``).
    ``dense_weights``: the quantized layers' weights are stored quantize-dequantized, so loaders
    keep them dense (Intel's ``auto_round:fake``: :mod:`autoround.formats.auto_round_fake`).
    """

    default: Scheme
    packing_format: str
    block_names: tuple[str, ...]
    extra_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    layout: Layout = "gptq"
    ignored_tensors: tuple[str, ...] = ()
    dense_weights: ClassVar[bool] = False

    @property
    def zero_offset(self) -> int:
        """Amount added back to stored zero points."""
        return ZERO_OFFSET[self.packing_format]

    def scheme_for(self, layer_name: str) -> Scheme | None:
        """The scheme a layer was stored with, or None if it was left in 16 bits."""
        entry = self.extra_config.get(layer_name)
        if entry is None:
            for pattern, cfg in self.extra_config.items():
                if re.search(pattern, layer_name):
                    entry = cfg
                    break
        in_blocks = any(layer_name.startswith(b + ".") for b in self.block_names)
        if entry is None:
            return _tiles_unread(self.default, layer_name) if in_blocks else None
        fields = {k: v for k, v in entry.items() if k in {*SCHEME_KEYS, "act_bits"} and v is not None}
        if int(fields.get("bits", self.default.bits)) >= UNQUANTIZED_BITS:
            return None
        if int(fields.get("act_bits", self.default.act_bits)) < UNQUANTIZED_BITS:
            # the other activation fields only count where activations are quantized (Intel lists
            # every field of an lm_head entry, a weight-only one's act_data_type too)
            fields.update({k: v for k, v in entry.items() if k in ACT_KEYS and v is not None})
        scheme = self.default.replace(**fields)
        # autoround's loaders read weights and calibrated activation scales (FP8_STATIC, NVFP4
        # W4A4); a layer with dynamic activation quantization (W8A8 is read by transformers and
        # vLLM through compressed-tensors) is refused
        if calibrated_kind(scheme) is None:
            require_weight_only(scheme, f"layer {layer_name}")
        return _tiles_unread(scheme, layer_name)

    def with_default_blocks(self, block_names: Sequence[str]) -> CheckpointSpec:
        """This spec, its blocks filled in from the model when the checkpoint names none (GPTQ)."""
        if self.block_names or not block_names:
            return self
        return dataclasses.replace(self, block_names=tuple(block_names))


def _tiles_unread(scheme: Scheme, layer_name: str) -> Scheme:
    """``scheme``, unless it tiles weights in 2-D blocks, which no autoround loader reads.

    Raises:
        NotImplementedError: naming the layer, ``block_shape`` and the loaders that read it.
    """
    if scheme.block_shape is not None:  # FP8_BLOCK: compressed-tensors' loaders read it
        raise NotImplementedError(
            f"layer {layer_name}: 2-D weight blocks (block_shape={scheme.block_shape}) are read by "
            "no autoround loader; save them in format llm_compressor and load that with "
            "transformers or vLLM (compressed-tensors)"
        )
    return scheme


@dataclass(frozen=True)
class Capabilities:
    """The schemes a format stores: data types, bit widths, symmetry, group sizes, activations.

    ``activations``: the activation kinds whose arguments the format stores beside the weights:
    dynamic ones by their :data:`~autoround.dtypes.act_kinds.ACT_KINDS` names, calibrated ones
    (whose scale is stored per layer) by :func:`~autoround.nn.input_scales.calibrated_kind`'s
    (``"fp8_static"``, ``"nvfp4"``); empty refuses every scheme with ``act_bits`` below 16.

    ``per_tensor``: whether ``group_size=0`` (one scale per tensor) can be stored; ``whole_groups``:
    whether every quantized layer's input width must be a whole number of groups (AWQ's gemm
    layout has no partial last group); ``mixed``: whether layers may have different schemes
    (AWQ's config states one); ``blocks``: whether a scheme's 2-D weight tiles (``block_shape``,
    one scale per tile: FP8_BLOCK) can be stored (compressed-tensors' ``block`` strategy; every
    other format stores row groups only). ``check``: the format's own limits beyond these fields (which bits
    of which data type, a group size the input width must divide), ``(scheme, in_features or
    None) -> why not or None``, told in words by ``note``.
    """

    data_types: tuple[str, ...]
    bits: tuple[int, ...]
    sym: tuple[bool, ...] = (True, False)
    per_tensor: bool = True
    whole_groups: bool = False
    mixed: bool = True
    check: Callable[[Scheme, int | None], str | None] | None = None
    note: str = ""
    activations: tuple[ActKind, ...] = ()
    blocks: bool = False

    def why_not(self, scheme: Scheme, in_features: int | None = None) -> str | None:
        """What of ``scheme`` cannot be stored (None: it can); with ``in_features``, on a layer
        of that input width."""
        if not self.stores_activations(scheme):
            return f"activation quantization act_bits={scheme.act_bits}"
        if scheme.block_shape is not None and not self.blocks:
            return f"2-D weight blocks {scheme.block_shape}"
        if scheme.data_type not in self.data_types or scheme.bits not in self.bits:
            return f"{scheme.data_type} {scheme.bits}-bit"
        if scheme.sym not in self.sym:
            return "symmetric" if scheme.sym else "asymmetric"
        if scheme.group_size == PER_TENSOR and not self.per_tensor:
            return "per-tensor (group_size 0)"
        return None if self.check is None else self.check(scheme, in_features)

    def stores(self, scheme: Scheme) -> bool:
        """Whether a layer quantized with ``scheme`` can be stored."""
        return self.why_not(scheme) is None

    def stores_activations(self, scheme: Scheme) -> bool:
        """Whether ``scheme``'s activation quantization (none: True) is built and stored here."""
        if scheme.is_weight_only:
            return True
        if activation_problem(scheme) is not None:
            return False
        return (calibrated_kind(scheme) or activation_kind(scheme)) in self.activations

    def partial_group(self, scheme: Scheme, in_features: int) -> bool:
        """Whether a layer of ``in_features`` inputs would need a partial last group it cannot store."""
        group = scheme.group_size  # tiles are no row groups (a format that stores them pads them)
        return (
            self.whole_groups
            and scheme.block_shape is None
            and 0 < group < in_features
            and in_features % group != 0
        )

    def describe(self) -> str:
        """What is stored, in words (error messages, ``autoround list``)."""
        parts = [f"{list(self.data_types)} with bits {list(self.bits)}"]
        if len(self.sym) == 1:
            parts.append("symmetric only" if self.sym[0] else "asymmetric only")
        if not self.per_tensor:
            parts.append("no per-tensor group")
        if self.whole_groups:
            parts.append("input widths a whole number of groups")
        if not self.mixed:
            parts.append("one scheme for every layer")
        if self.note:
            parts.append(self.note)
        if self.activations:
            parts.append(f"activations: {list(self.activations)}")
        if self.blocks:
            parts.append("2-D weight blocks (block_shape)")
        return ", ".join(parts)


SaveFn = Callable[["QuantizedModel", Path], None]
ReadSpecFn = Callable[[Mapping[str, Any], Sequence[str]], CheckpointSpec]
CheckFn = Callable[["QuantizedModel"], list[str]]
MixFn = Callable[["Scheme", Mapping[str, "Scheme"]], list[str]]
PlanFn = Callable[["nn.Module", "LayerPlan"], "LayerPlan"]


def reads_nothing(config: Mapping[str, Any]) -> bool:
    """``can_read`` of an entry that only writes (another entry reads its checkpoints)."""
    return False


def _not_a_reader(config: Mapping[str, Any], *_: Any) -> Any:
    raise FormatError("this format entry only writes; its checkpoints are read through another entry")


@dataclass(frozen=True)
class Format:
    """One entry of :data:`autoround.formats.FORMATS`.

    Args:
        name: the registry key (``"auto_round"``, ``"auto_gptq"``, ``"gguf:q4_k_m"``).
        quant_method: the ``quant_method`` its configs carry (``"auto-round"``).
        capabilities: what it stores.
        can_read: whether a ``quantization_config`` dict is this format's (entries that only
            write leave the default, which reads nothing).
        to_auto_round: the config as auto-round keys (what transformers' ``AutoRoundConfig``
            holds); idempotent, refusing a variant not read (naming what is allowed).
        read_spec: ``(config, block_names) -> CheckpointSpec``; ``block_names`` (the model's decoder
            blocks) fill in a config that names none. Errors name the key at fault.
        writer: ``(qm, directory)``: write the checkpoint into ``directory`` (existing, empty);
            None where only reading is built. :meth:`save` adds the checks and the atomic rename.
        runtimes: the runtimes that load what it writes, for ``autoround list`` and docs.
        read_via: the entry whose reader reads this format's checkpoints, for an entry that only
            writes (``"auto_round"`` for ``auto_round:auto_gptq``); None when autoround cannot.
        check_quantized: refusals that depend on the quantized values, not only on the schemes
            (a zero point the layout cannot hold), checked before anything is written.
        check_mixing: ``(default scheme, name -> scheme) -> refusals``: layers the checkpoint
            cannot hold beside its default scheme (which chooses one layout for it), checked
            before any work (:func:`~autoround.formats.preflight.check_plan`).
        plan: ``(model, plan) -> plan``: the format's own per-layer choices, made before any work
            (GGUF: llama.cpp's block type per tensor and its fallback); None leaves the plan as is.
    """

    name: str
    quant_method: str
    capabilities: Capabilities
    can_read: Callable[[Mapping[str, Any]], bool] = reads_nothing
    to_auto_round: Callable[[Mapping[str, Any]], dict[str, Any]] = _not_a_reader
    read_spec: ReadSpecFn = _not_a_reader
    writer: SaveFn | None = None
    runtimes: tuple[str, ...] = ()
    read_via: str | None = None
    check_quantized: CheckFn | None = None
    check_mixing: MixFn | None = None
    plan: PlanFn | None = None

    def adapt(self, model: nn.Module, plan: LayerPlan) -> LayerPlan:
        """``plan`` with this format's own per-layer choices (see ``plan``)."""
        return plan if self.plan is None else self.plan(model, plan)

    @property
    def writable(self) -> bool:
        """Whether a quantized model can be saved in this format."""
        return self.writer is not None

    @property
    def readable(self) -> bool:
        """Whether autoround's loaders read this format's checkpoints (itself or through another entry)."""
        return self.can_read is not reads_nothing or self.read_via is not None

    @property
    def subdir(self) -> str:
        """The folder this format gets when several are written at once (Intel's spelling)."""
        return self.name.replace(":", "-").replace("_", "-")

    def stores(self, scheme: Scheme) -> bool:
        """Whether a layer quantized with ``scheme`` can be stored in this format."""
        return self.capabilities.stores(scheme)

    def problems(
        self, plan: LayerPlan, model: nn.Module | None = None, default: Scheme | None = None
    ) -> list[str]:
        """One message per quantized layer of ``plan`` this format cannot store; with ``model``,
        layer widths are checked too (a partial last group where the format has none); with the
        run's ``default`` scheme, the layers it cannot hold beside it (``check_mixing``)."""
        caps = self.capabilities
        quantized = plan.quantized()
        common = Counter(quantized.values()).most_common(1)[0][0] if quantized else None
        found = []
        for name, scheme in quantized.items():
            why = caps.why_not(scheme)
            if why is None and not caps.mixed and scheme != common:
                why = f"a scheme other than the rest's ({_short(scheme)}, not {_short(common)})"
            if why is None and model is not None:
                in_features = linear_shape(model.get_submodule(name))[1]
                if caps.partial_group(scheme, in_features):
                    why = f"group_size {scheme.group_size} on {in_features} inputs (a partial last group)"
                else:
                    why = caps.why_not(scheme, in_features)
            if why is not None:
                found.append(
                    f"{name}: {why} cannot be stored in format {self.name!r} (it stores {caps.describe()})"
                )
        if not found and default is not None and self.check_mixing is not None:
            found = self.check_mixing(default, quantized)
        return found

    def refusals(self, qm: QuantizedModel) -> list[str]:
        """Why ``qm`` cannot be written in this format (empty: it can)."""
        if self.writer is None:
            return [f"format {self.name!r} can be read but not written: only its reader is built"]
        found = self.problems(qm.plan, qm.model, qm.scheme)
        if not found and self.check_quantized is not None:
            found = self.check_quantized(qm)
        return found

    def write(self, qm: QuantizedModel, directory: Path) -> None:
        """Write ``qm`` into ``directory`` (existing and empty); no checks (see :meth:`save`)."""
        if self.writer is None:
            raise FormatError(f"format {self.name!r} can be read but not written: only its reader is built")
        self.writer(qm, directory)

    def save(self, qm: QuantizedModel, output_dir: str | Path, overwrite: bool = False) -> Path:
        """Write ``qm`` to ``output_dir`` in this format, atomically (a temp dir, then renamed).

        Raises:
            FormatError: the format is read-only here, or cannot store some layer (checked before
                anything is written, naming the first layers).
        """
        raise_refusals(self.refusals(qm))
        target = Path(output_dir)
        with atomic_dir(target, overwrite=overwrite) as tmp:
            self.write(qm, tmp)
        return target


def _short(scheme: Scheme | None) -> str:
    if scheme is None:
        return "16-bit"
    return f"{scheme.data_type} W{scheme.bits} group {scheme.group_size}{'' if scheme.sym else ' asym'}"


def raise_refusals(problems: list[str]) -> None:
    """FormatError naming the first three problems (and how many more), if there are any."""
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise FormatError("; ".join(problems[:3]) + more)
