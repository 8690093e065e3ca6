"""Quantization schemes: what a layer's weights become, as small validated data.

A :class:`Scheme` is checked once, on creation; everything downstream trusts it. Presets follow
Intel auto-round's names and values (``W4A16`` is 4-bit, group 128, symmetric integers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autoround.dtypes import DTYPES
from autoround.dtypes.gguf_blocks import BLOCK_TYPES as GGUF_BLOCK_TYPES
from autoround.errors import SchemeError

#: Bits that mean "keep this layer in 16-bit floating point" (no quantization).
UNQUANTIZED_BITS = 16
#: Group size -1 is one group per output channel; 0 is one group for the whole tensor.
PER_CHANNEL = -1
PER_TENSOR = 0

#: data_type names that only describe an unquantized (16-bit) layer.
FLOAT_DATA_TYPES = ("fp", "float")

_ACT_FIELDS = ("act_group_size", "act_sym", "act_data_type", "act_dynamic")


@dataclass(frozen=True)
class Scheme:
    """How one layer's weights are quantized.

    Attributes:
        bits: weight bits; 16 keeps the layer unquantized.
        group_size: inputs sharing one scale; -1 per output channel, 0 per tensor. A group size
            that does not divide the input width leaves a partial last group (Intel's rule).
        sym: symmetric (no zero point stored per group) or asymmetric.
        data_type: a name in :data:`autoround.dtypes.DTYPES`.
        act_bits: activation bits; only 16 (weight-only) is built so far.
    """

    bits: int = 4
    group_size: int = 128
    sym: bool = True
    data_type: str = "int"
    act_bits: int = 16
    act_group_size: int | None = None
    act_sym: bool | None = None
    act_data_type: str | None = None
    act_dynamic: bool | None = None

    def __post_init__(self) -> None:
        _check_int("bits", self.bits)
        _check_int("group_size", self.group_size)
        _check_int("act_bits", self.act_bits)
        if not isinstance(self.sym, bool):
            raise SchemeError(f"sym must be True or False, got {self.sym!r}")
        known = sorted(DTYPES) if self.is_quantized else sorted({*DTYPES, *FLOAT_DATA_TYPES})
        if self.data_type not in known:
            raise SchemeError(f"unknown data_type {self.data_type!r}; allowed: {known}")
        if self.bits != UNQUANTIZED_BITS:
            allowed = DTYPES[self.data_type].allowed_bits if self.data_type in DTYPES else ()
            if self.bits not in allowed:
                raise SchemeError(
                    f"bits={self.bits} is not allowed for data_type {self.data_type!r}; "
                    f"allowed: {list(allowed)} (or {UNQUANTIZED_BITS} to keep the layer unquantized)"
                )
        if self.group_size < PER_CHANNEL:
            raise SchemeError(
                f"group_size={self.group_size} is invalid; use a positive size, "
                f"{PER_CHANNEL} (per output channel) or {PER_TENSOR} (per tensor)"
            )
        if self.is_quantized:
            # A type's own constraints beyond its bit widths (MX: blocks of 32, symmetric).
            problem = DTYPES[self.data_type].scheme_problem(self.bits, self.group_size, self.sym)
            if problem is not None:
                raise SchemeError(problem)
        if self.act_bits < UNQUANTIZED_BITS:
            raise NotImplementedError(
                f"act_bits={self.act_bits}: activation quantization is not built yet; "
                f"only weight-only schemes (act_bits={UNQUANTIZED_BITS}) are supported"
            )

    @property
    def is_quantized(self) -> bool:
        """False for a scheme that keeps the layer in 16 bits."""
        return self.bits != UNQUANTIZED_BITS

    def num_groups(self, in_features: int) -> int:
        """Groups per output row: ceil(in / group), so a partial last group counts as one."""
        if self.group_size in (PER_CHANNEL, PER_TENSOR) or in_features <= self.group_size:
            return 1
        return -(-in_features // self.group_size)

    def replace(self, **overrides: Any) -> Scheme:
        """A copy with some fields changed, validated again. Unknown fields raise SchemeError."""
        _check_fields(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The fields a checkpoint config stores (activation fields only when set)."""
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items() if not (k in _ACT_FIELDS and v is None)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scheme:
        """Build from a mapping of field names; an unknown key raises SchemeError naming it."""
        _check_fields(data)
        return cls(**dict(data))


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemeError(f"{name} must be an integer, got {value!r}")


def _check_fields(data: Mapping[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(Scheme)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SchemeError(f"unknown scheme field(s) {unknown}; allowed: {sorted(known)}")


def _int_presets() -> dict[str, Scheme]:
    presets: dict[str, Scheme] = {}
    for bits in DTYPES["int"].allowed_bits:
        presets[f"W{bits}A16"] = Scheme(bits=bits, group_size=128)
        for group in (64, 32):
            presets[f"W{bits}A16G{group}"] = Scheme(bits=bits, group_size=group)
    return presets


#: llama-quantize's mixed recipes, by block type: ``GGUF:Q4_K_M`` is a Q4_K scheme (the recipe's
#: per-tensor choices are the ``gguf:q4_k_m`` format's plan).
GGUF_RECIPE_SUFFIXES = {"q2_k": ("S",), "q3_k": ("S", "M", "L"), "q4_k": ("S", "M"), "q5_k": ("S", "M")}


def _gguf_presets() -> dict[str, Scheme]:
    """``GGUF:Q4_0`` ... ``GGUF:Q6_K`` (block types) and ``GGUF:Q4_K_M`` etc. (Intel's names)."""
    presets: dict[str, Scheme] = {}
    for entry in GGUF_BLOCK_TYPES.values():
        scheme = Scheme(bits=entry.bits, group_size=entry.group, sym=entry.sym, data_type=entry.data_type)
        presets[f"GGUF:{entry.name.upper()}"] = scheme
        for suffix in GGUF_RECIPE_SUFFIXES.get(entry.name, ()):
            presets[f"GGUF:{entry.name.upper()}_{suffix}"] = scheme
    return presets


#: Preset name (upper case) -> scheme. Values as in Intel auto-round.
PRESETS: dict[str, Scheme] = {
    **_int_presets(),
    **_gguf_presets(),
    "BF16": Scheme(bits=UNQUANTIZED_BITS, data_type="fp"),
    "W16A16": Scheme(bits=UNQUANTIZED_BITS, data_type="fp"),
}


def preset(name: str) -> Scheme:
    """Look a preset up by name, case-insensitively."""
    key = name.strip().upper()
    if key not in PRESETS:
        raise SchemeError(f"unknown scheme {name!r}; presets: {sorted(PRESETS)}")
    return PRESETS[key]


SchemeLike = str | Scheme | Mapping[str, Any]


def parse_scheme(scheme: SchemeLike | None = "W4A16", **overrides: Any) -> Scheme:
    """Turn a preset name, a mapping of fields or a Scheme into a Scheme, then apply overrides.

    Overrides whose value is None are ignored, so CLI flags that were not given pass through.

    >>> parse_scheme("w4a16", group_size=64).group_size
    64
    """
    if scheme is None:
        scheme = "W4A16"
    if isinstance(scheme, Scheme):
        base = scheme
    elif isinstance(scheme, str):
        base = preset(scheme)
    elif isinstance(scheme, Mapping):
        base = Scheme.from_dict(scheme)
    else:
        raise SchemeError(f"scheme must be a preset name, a mapping or a Scheme, got {scheme!r}")
    given = {k: v for k, v in overrides.items() if v is not None}
    return base.replace(**given) if given else base
