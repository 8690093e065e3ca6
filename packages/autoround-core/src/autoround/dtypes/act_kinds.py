"""The built kinds of dynamic activation quantization, as a registry: kind name -> :class:`ActKindEntry`
(the activation fields it takes, the weights it goes with, its quantize-dequantize).

A scheme's activation fields (``act_data_type``, ``act_bits``, ``act_group_size``; symmetric and
dynamic: :mod:`autoround.dtypes.activations` refuses the rest first) select at most one entry.
Adding a kind means adding an entry here; the rules, the hooks (:mod:`autoround.nn.act_hooks`)
and the formats' ``Capabilities.activations`` read kind names only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from autoround.dtypes.act_formulas import qdq_fp8_per_token, qdq_groups, qdq_int_per_token
from autoround.dtypes.mx_elements import MX_BLOCK

#: How a kind groups the features of a token: one scale per token (``act_group_size=-1``), per
#: MX block of 32, or per group of any positive ``act_group_size`` (the scheme's choice).
Grouping = Literal["token", "mx", "group"]
PER_TOKEN = -1


class Scheme(Protocol):
    """The fields of :class:`autoround.schemes.Scheme` the activation rules read (a protocol:
    ``schemes`` sits above the data types and imports these modules)."""

    @property
    def bits(self) -> int: ...
    @property
    def group_size(self) -> int: ...
    @property
    def sym(self) -> bool: ...
    @property
    def data_type(self) -> str: ...
    @property
    def act_bits(self) -> int: ...
    @property
    def act_group_size(self) -> int | None: ...
    @property
    def act_sym(self) -> bool | None: ...
    @property
    def act_data_type(self) -> str | None: ...
    @property
    def act_dynamic(self) -> bool | None: ...
    @property
    def block_shape(self) -> tuple[int, int] | None: ...
    @property
    def is_weight_only(self) -> bool: ...


#: ``(x, group_size) -> (quantize-dequantized x, scales)``.
Qdq = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ActKindEntry:
    """One built activation kind: the ``act_data_type`` and ``act_bits`` it takes, how it groups
    features, its quantize-dequantize, a description, and ``weights``: what the weights must be
    (``scheme -> why not or None``; None: any weights the weight side builds)."""

    name: str
    data_type: str
    bits: int
    grouping: Grouping
    qdq: Qdq
    description: str
    weights: Callable[[Scheme], str | None] | None = None

    def takes_group(self, group_size: int) -> bool:
        """Whether ``act_group_size=group_size`` is this kind's grouping."""
        if self.grouping == "token":
            return group_size == PER_TOKEN
        if self.grouping == "mx":
            return group_size == MX_BLOCK
        return group_size > 0

    @property
    def group_words(self) -> str:
        """The ``act_group_size`` it takes, in words."""
        return {
            "token": f"act_group_size={PER_TOKEN} (per token)",
            "mx": f"act_group_size={MX_BLOCK} (MX blocks)",
            "group": "act_group_size>0 (per group of features in each token)",
        }[self.grouping]

    @property
    def default_group(self) -> int | None:
        """The group size its qdq uses when none is given (None: the scheme must give it)."""
        return {"token": PER_TOKEN, "mx": MX_BLOCK, "group": None}[self.grouping]


def _w8a8_weights(scheme: Scheme) -> str | None:
    """Per-token 8-bit activations go with 8-bit per-channel weights of their own type (what
    compressed-tensors' ``W8A8`` / ``FP8_DYNAMIC`` layouts and vLLM's kernels take)."""
    act_type = scheme.act_data_type if scheme.act_data_type is not None else scheme.data_type
    fits = scheme.bits == 8 and scheme.group_size == PER_TOKEN and scheme.data_type == act_type
    if fits and (act_type != "int" or scheme.sym):
        return None
    return (
        f"{act_type} 8-bit activations go with {act_type} 8-bit"
        f"{' symmetric' if act_type == 'int' else ''} per-channel weights (group_size=-1), "
        f"not {scheme.data_type} {scheme.bits}-bit {'sym' if scheme.sym else 'asym'} "
        f"group_size={scheme.group_size}"
    )


def _per_token(fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> Qdq:
    """A per-token formula as a :data:`Qdq` (the group size is always -1 there)."""

    def qdq(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return fn(x)

    return qdq


def _grouped(data_type: str, bits: int) -> Qdq:
    """The weight type ``data_type``'s qdq at ``bits``, per group, as a :data:`Qdq`."""

    def qdq(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return qdq_groups(x, data_type, bits, group_size)

    return qdq


#: The MX activation types: name prefix, shared-exponent rounding words, bit widths (Intel's
#: ``mx_fp<bits>`` / ``mx_int<bits>`` element formats that ``act_bits`` allows).
_MX_TYPES = {
    "mx_fp": ("mxfp{bits}", "floor", (4, 6, 8)),
    "mx_fp_rceil": ("mxfp{bits}_rceil", "rceil", (4, 6, 8)),
    "mx_int": ("mxint{bits}", "floor", (4, 8)),
}
_MX_ELEMENT_WORDS = {("mx_fp", 4): "E2M1", ("mx_fp", 6): "E2M3", ("mx_fp", 8): "E4M3"}


def _mx_entries() -> list[ActKindEntry]:
    entries = []
    for data_type, (pattern, rounding, all_bits) in _MX_TYPES.items():
        for bits in all_bits:
            family = "mx_int" if data_type == "mx_int" else "mx_fp"
            element = _MX_ELEMENT_WORDS.get((family, bits), f"{bits}-bit fixed-point")
            description = (
                f"MX {element} elements per block of {MX_BLOCK} features, a shared E8M0 scale "
                f"({rounding} of the block maximum's exponent); Intel's quant_mx"
                f"{'_rceil' if rounding == 'rceil' else ''} on {data_type}{bits}"
            )
            entries.append(
                ActKindEntry(
                    pattern.format(bits=bits), data_type, bits, "mx", _grouped(data_type, bits), description
                )
            )
    return entries


def _entries() -> list[ActKindEntry]:
    return [
        ActKindEntry(
            "int8",
            "int",
            8,
            "token",
            _per_token(qdq_int_per_token),
            "INT8 per token, scale ±absmax / 128 in float16 (Intel's rtn_int_sym)",
            _w8a8_weights,
        ),
        ActKindEntry(
            "fp8",
            "fp",
            8,
            "token",
            _per_token(qdq_fp8_per_token),
            "FP8 E4M3 per token, scale absmax / 448 in float32 (Intel's fp8_sym)",
            _w8a8_weights,
        ),
        ActKindEntry(
            "fp8_group",
            "fp",
            8,
            "group",
            _grouped("fp", 8),
            "FP8 E4M3 per group of act_group_size features, scale absmax / 448 in float32 "
            "(Intel's fp8_sym on (-1, group) rows, as FP8_BLOCK's activations)",
        ),
        *_mx_entries(),
    ]


#: Kind name -> entry.
ACT_KINDS: dict[str, ActKindEntry] = {entry.name: entry for entry in _entries()}


def kinds_of(data_type: str) -> list[ActKindEntry]:
    """The entries taking ``act_data_type=data_type``, in registry order."""
    return [entry for entry in ACT_KINDS.values() if entry.data_type == data_type]


def built_words() -> str:
    """What is built, in words: per ``act_data_type``, the ``act_bits`` and groupings it takes."""
    parts = []
    for data_type in dict.fromkeys(entry.data_type for entry in ACT_KINDS.values()):
        by_group: dict[str, list[ActKindEntry]] = {}
        for entry in kinds_of(data_type):
            by_group.setdefault(entry.group_words, []).append(entry)
        for words, entries in by_group.items():
            bits = "/".join(str(entry.bits) for entry in entries)
            weights = " (with 8-bit per-channel weights of the same type)" if entries[0].weights else ""
            parts.append(f"act_data_type={data_type!r} act_bits={bits} {words}{weights}")
    return "dynamic symmetric activations (act_dynamic=True, act_sym=True): " + "; ".join(parts)
