"""The built kinds of activation quantization, as a registry: kind name -> :class:`ActKindEntry`
(the activation fields it takes, the weights it goes with, its quantize-dequantize; for a
calibrated kind, the formula taking the layer's calibrated range).

A scheme's activation fields (``act_data_type``, ``act_bits``, ``act_group_size``, whether the
range is calibrated: :func:`needs_range`; symmetric: :mod:`autoround.dtypes.activations` refuses
the rest first) select at most one entry.
Adding a kind means adding an entry here; the rules, the hooks (:mod:`autoround.nn.act_hooks`)
and the formats' ``Capabilities.activations`` read kind names only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from autoround.dtypes.act_formulas import (
    NV_ACT_BLOCK,
    qdq_fp8_per_token,
    qdq_fp8_static,
    qdq_groups,
    qdq_int_per_token,
    qdq_nvfp4_static,
)
from autoround.dtypes.mx_elements import MX_BLOCK
from autoround.dtypes.ste import straight_through

#: How a kind groups the features of a token: one scale per token (``act_group_size=-1``), per
#: MX block of 32, per group of any positive ``act_group_size`` (the scheme's choice), one scale
#: for the whole tensor (``0``), or NVFP4's blocks of 16.
Grouping = Literal["token", "mx", "group", "tensor", "nv"]
PER_TOKEN = -1
PER_TENSOR = 0
_FIXED_GROUPS = {"token": PER_TOKEN, "mx": MX_BLOCK, "tensor": PER_TENSOR, "nv": NV_ACT_BLOCK}


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
#: ``(x, absmax, range_factor) -> (quantize-dequantized x, scales)``: a calibrated kind's formula,
#: ``absmax`` the layer's calibrated input range (0-dim float32), ``range_factor`` SignRound's
#: tuned factor on it (1 elsewhere).
CalibratedQdq = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor | float], tuple[torch.Tensor, torch.Tensor]
]


@dataclass(frozen=True)
class ActKindEntry:
    """One built activation kind: the ``act_data_type`` and ``act_bits`` it takes, how it groups
    features, its quantize-dequantize, a description, and ``weights``: what the weights must be
    (``scheme -> why not or None``; None: any weights the weight side builds).

    A calibrated kind (``calibrated`` set: static FP8, NVFP4's activations) quantizes with a range
    observed on the calibration set (``LayerQuant.input_absmax``) through ``calibrated``; its
    ``qdq`` is the same formula with the range of ``x`` itself (what Intel's ``WrapperWALayer``
    computes after tuning: it passes the calibrated range under a name its function ignores).
    ``tunes_range``: SignRound tunes a factor on the range (Intel's ``act_max_scale``), through
    ``tuning``: the calibrated formula with Intel's gradients (to the input and the factor).
    """

    name: str
    data_type: str
    bits: int
    grouping: Grouping
    qdq: Qdq
    description: str
    weights: Callable[[Scheme], str | None] | None = None
    calibrated: CalibratedQdq | None = None
    tunes_range: bool = False
    tuning: CalibratedQdq | None = None

    def takes_group(self, group_size: int) -> bool:
        """Whether ``act_group_size=group_size`` is this kind's grouping."""
        if self.grouping == "group":
            return group_size > 0
        return group_size == _FIXED_GROUPS[self.grouping]

    @property
    def group_words(self) -> str:
        """The ``act_group_size`` it takes, in words."""
        return {
            "token": f"act_group_size={PER_TOKEN} (per token)",
            "mx": f"act_group_size={MX_BLOCK} (MX blocks)",
            "group": "act_group_size>0 (per group of features in each token)",
            "tensor": f"act_group_size={PER_TENSOR} (per tensor)",
            "nv": f"act_group_size={NV_ACT_BLOCK} (NVFP4 blocks)",
        }[self.grouping]

    @property
    def default_group(self) -> int | None:
        """The group size its qdq uses when none is given (None: the scheme must give it)."""
        return _FIXED_GROUPS.get(self.grouping)


def _per_channel_weights(scheme: Scheme) -> str | None:
    """Per-token activations go with per-channel weights of their own type and width (what
    compressed-tensors' ``W8A8`` / ``FP8_DYNAMIC`` layouts and vLLM's kernels take; Intel's
    ``INT4`` preset is W4A4 in the same shape)."""
    act_type = scheme.act_data_type if scheme.act_data_type is not None else scheme.data_type
    fits = scheme.bits == scheme.act_bits and scheme.group_size == PER_TOKEN and scheme.data_type == act_type
    if fits and (act_type != "int" or scheme.sym):
        return None
    return (
        f"{act_type} {scheme.act_bits}-bit activations go with {act_type} {scheme.act_bits}-bit"
        f"{' symmetric' if act_type == 'int' else ''} per-channel weights (group_size=-1), "
        f"not {scheme.data_type} {scheme.bits}-bit {'sym' if scheme.sym else 'asym'} "
        f"group_size={scheme.group_size}"
    )


def _int_per_token(bits: int) -> Qdq:
    """Intel's ``rtn_int_sym`` per token at ``bits`` as a :data:`Qdq`."""

    def qdq(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return qdq_int_per_token(x, bits)

    return qdq


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


def _weights_of(data_type: str, bits: int, group_size: int, words: str) -> Callable[[Scheme], str | None]:
    """A kind's weight rule: ``data_type`` ``bits``-bit weights with ``group_size`` (``words``)."""

    def check(scheme: Scheme) -> str | None:
        if (scheme.data_type, scheme.bits, scheme.group_size) == (data_type, bits, group_size):
            return None
        return (
            f"these activations go with {words} (data_type={data_type!r}, bits={bits}, "
            f"group_size={group_size}), not {scheme.data_type} {scheme.bits}-bit "
            f"group_size={scheme.group_size}"
        )

    return check


def _self_ranged(calibrated: CalibratedQdq) -> Qdq:
    """A calibrated formula with the range of ``x`` itself (see :class:`ActKindEntry`)."""

    def qdq(x: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return calibrated(x, x.detach().abs().amax().to(torch.float32), 1.0)

    return qdq


def _nvfp4_static(
    x: torch.Tensor, absmax: torch.Tensor, range_factor: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    # Intel's nv_fp4_with_static_gs takes no factor on the range (act_max_scale is never tuned)
    return qdq_nvfp4_static(x, absmax)


def _calibrated_entries() -> list[ActKindEntry]:
    return [
        ActKindEntry(
            "fp8_static",
            "fp",
            8,
            "tensor",
            _self_ranged(qdq_fp8_static),
            "FP8 E4M3 per tensor with a calibrated range, scale absmax / 448 in float32 (Intel's "
            "fp8_sym with tensor_max, the FP8_STATIC preset; act_dynamic=False)",
            _weights_of("fp", 8, PER_TOKEN, "FP8 per-channel weights"),
            calibrated=qdq_fp8_static,
            tunes_range=True,
            tuning=functools.partial(qdq_fp8_static, through=straight_through),
        ),
        ActKindEntry(
            "nvfp4",
            "nv_fp4_with_static_gs",
            4,
            "nv",
            _self_ranged(_nvfp4_static),
            f"NVFP4: E2M1 elements, an E4M3 scale per {NV_ACT_BLOCK} features relative to a global "
            "scale 448 * 6 / absmax calibrated per tensor (Intel's nv_fp4_with_static_gs, the "
            "NVFP4 preset)",
            _weights_of("nv_fp", 4, NV_ACT_BLOCK, "NVFP4 weights"),
            calibrated=_nvfp4_static,
        ),
    ]


def _entries() -> list[ActKindEntry]:
    return [
        ActKindEntry(
            "int8",
            "int",
            8,
            "token",
            _int_per_token(8),
            "INT8 per token, scale ±absmax / 128 in float16 (Intel's rtn_int_sym)",
            _per_channel_weights,
        ),
        ActKindEntry(
            "int4",
            "int",
            4,
            "token",
            _int_per_token(4),
            "INT4 per token, scale ±absmax / 8 in float16 (Intel's rtn_int_sym at 4 bits, the INT4 preset)",
            _per_channel_weights,
        ),
        ActKindEntry(
            "fp8",
            "fp",
            8,
            "token",
            _per_token(qdq_fp8_per_token),
            "FP8 E4M3 per token, scale absmax / 448 in float32 (Intel's fp8_sym)",
            _per_channel_weights,
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
        *_calibrated_entries(),
    ]


#: Kind name -> entry.
ACT_KINDS: dict[str, ActKindEntry] = {entry.name: entry for entry in _entries()}


def kinds_of(data_type: str, calibrated: bool | None = None) -> list[ActKindEntry]:
    """The entries taking ``act_data_type=data_type``, in registry order; with ``calibrated``,
    only the calibrated (True) or the dynamic (False) ones."""
    return [
        entry
        for entry in ACT_KINDS.values()
        if entry.data_type == data_type and calibrated in (None, entry.calibrated is not None)
    ]


def needs_range(data_type: str, dynamic: bool) -> bool:
    """Whether activations of ``act_data_type=data_type`` need a calibrated range: static ones
    (``act_dynamic=False``) and a type named static (Intel's ``check_need_act_calibration``:
    ``nv_fp4_with_static_gs`` is calibrated whatever ``act_dynamic`` says)."""
    return not dynamic or "static" in data_type


def _words(calibrated: bool) -> list[str]:
    parts = []
    entries = [entry for entry in ACT_KINDS.values() if (entry.calibrated is not None) == calibrated]
    for data_type in dict.fromkeys(entry.data_type for entry in entries):
        by_group: dict[str, list[ActKindEntry]] = {}
        for entry in kinds_of(data_type, calibrated):
            by_group.setdefault(entry.group_words, []).append(entry)
        for words, group in by_group.items():
            bits = "/".join(str(entry.bits) for entry in group)
            weights = ""
            if group[0].weights and not calibrated:
                weights = " (with per-channel weights of the same type and width)"
            parts.append(f"act_data_type={data_type!r} act_bits={bits} {words}{weights}")
    return parts


def built_words() -> str:
    """What is built, in words: per ``act_data_type``, the ``act_bits`` and groupings it takes,
    dynamic and calibrated."""
    return (
        "dynamic symmetric activations (act_dynamic=True, act_sym=True): "
        + "; ".join(_words(False))
        + "; calibrated symmetric activations (act_dynamic=False, or a type named static): "
        + "; ".join(_words(True))
    )
