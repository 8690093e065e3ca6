"""What a checkpoint format is (:class:`Format`), and what every loader reads (:class:`CheckpointSpec`).

A format entry states once what it stores (:class:`Capabilities`), how it writes a quantized
model (``save``; reading-only formats have none), which ``quantization_config`` dicts it reads
(``can_read``) and how it turns one into a :class:`CheckpointSpec`: the per-layer schemes and
the tensor layout on disk, in auto-round's vocabulary, which is what the loaders, the vLLM
method and the backends understand.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from autoround.errors import FormatError
from autoround.schemes import UNQUANTIZED_BITS, Scheme

if TYPE_CHECKING:
    from autoround.layer_plan import LayerPlan
    from autoround.quantized_model import QuantizedModel

#: auto-round's ``quant_method``, the vocabulary every spec is expressed in.
QUANT_METHOD = "auto-round"
GPTQ_PACKING = "auto_round:auto_gptq"
PLAIN_PACKING = "auto_round"
#: What is subtracted from a zero point before it is stored, per packing format.
ZERO_OFFSET = {GPTQ_PACKING: 1, PLAIN_PACKING: 0}
SCHEME_KEYS = ("bits", "group_size", "sym", "data_type")

#: How a layer's tensors lie on disk: GPTQ's int32 layout (the one loaders compute with), or
#: AutoAWQ's gemm layout (repacked into GPTQ's once, at load time).
Layout = Literal["gptq", "awq"]


def quant_method_of(config: Mapping[str, Any]) -> str:
    """A config's ``quant_method`` as a plain string (transformers hands an enum); none = ours."""
    method = config.get("quant_method", QUANT_METHOD)
    return str(getattr(method, "value", method))


@dataclass(frozen=True)
class CheckpointSpec:
    """What a checkpoint's ``quantization_config`` says, validated.

    ``packing_format`` and :attr:`zero_offset` describe the layers as loaders hold them (AWQ
    layers already repacked); ``layout`` says how they lie on disk; ``ignored_tensors`` are
    regular expressions of file tensors the layers do not hold (GPTQ's trivial ``g_idx``).
    """

    default: Scheme
    packing_format: str
    block_names: tuple[str, ...]
    extra_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    layout: Layout = "gptq"
    ignored_tensors: tuple[str, ...] = ()

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
            return self.default if in_blocks else None
        fields = {k: v for k, v in entry.items() if k in {*SCHEME_KEYS, "act_bits"} and v is not None}
        if int(fields.get("bits", self.default.bits)) >= UNQUANTIZED_BITS:
            return None
        return self.default.replace(**fields)

    def with_default_blocks(self, block_names: Sequence[str]) -> CheckpointSpec:
        """This spec, its blocks filled in from the model when the checkpoint names none (GPTQ)."""
        if self.block_names or not block_names:
            return self
        return dataclasses.replace(self, block_names=tuple(block_names))


@dataclass(frozen=True)
class Capabilities:
    """The schemes a format stores: its data types and bit widths (weight-only)."""

    data_types: tuple[str, ...]
    bits: tuple[int, ...]

    def stores(self, scheme: Scheme) -> bool:
        """Whether a layer quantized with ``scheme`` can be stored."""
        return scheme.data_type in self.data_types and scheme.bits in self.bits


SaveFn = Callable[["QuantizedModel", Path, bool], Path]
ReadSpecFn = Callable[[Mapping[str, Any], Sequence[str]], CheckpointSpec]


@dataclass(frozen=True)
class Format:
    """One entry of :data:`autoround.formats.FORMATS`.

    Args:
        name: the registry key (``"auto_round"``).
        quant_method: the ``quant_method`` its configs carry (``"auto-round"``).
        capabilities: what it stores.
        can_read: whether a ``quantization_config`` dict is this format's.
        to_auto_round: the config as auto-round keys (what transformers' ``AutoRoundConfig``
            holds); idempotent, refusing a variant not read (naming what is allowed).
        read_spec: ``(config, block_names) -> CheckpointSpec``; ``block_names`` (the model's decoder
            blocks) fill in a config that names none. Errors name the key at fault.
        writer: ``(qm, output_dir, overwrite) -> Path``, or None where only reading is built.
    """

    name: str
    quant_method: str
    capabilities: Capabilities
    can_read: Callable[[Mapping[str, Any]], bool]
    to_auto_round: Callable[[Mapping[str, Any]], dict[str, Any]]
    read_spec: ReadSpecFn
    writer: SaveFn | None = None

    @property
    def writable(self) -> bool:
        """Whether a quantized model can be saved in this format."""
        return self.writer is not None

    def stores(self, scheme: Scheme) -> bool:
        """Whether a layer quantized with ``scheme`` can be stored in this format."""
        return self.capabilities.stores(scheme)

    def problems(self, plan: LayerPlan) -> list[str]:
        """One message per quantized layer of ``plan`` whose scheme this format cannot store."""
        caps = self.capabilities
        return [
            f"{name}: {scheme.data_type} {scheme.bits}-bit cannot be stored in format {self.name!r} "
            f"(it stores {list(caps.data_types)} with bits {list(caps.bits)})"
            for name, scheme in plan.quantized().items()
            if not self.stores(scheme)
        ]

    def save(self, qm: QuantizedModel, output_dir: str | Path, overwrite: bool = False) -> Path:
        """Write ``qm`` to ``output_dir`` in this format.

        Raises:
            FormatError: the format is read-only here, or cannot store some layer's scheme (checked
                before anything is written, naming the first layers).
        """
        if self.writer is None:
            raise FormatError(f"format {self.name!r} can be read but not written: only its reader is built")
        problems = self.problems(qm.plan)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise FormatError("; ".join(problems[:3]) + more)
        return self.writer(qm, Path(output_dir), overwrite)
