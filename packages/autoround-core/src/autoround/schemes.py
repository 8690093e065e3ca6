"""Quantization schemes: what a layer's weights become, as small validated data.

A :class:`Scheme` is checked once, on creation; everything downstream trusts it. Presets follow
Intel auto-round's names and values (``W4A16`` is 4-bit, group 128, symmetric integers; the
floating-point, MX and W8A8 ones in :data:`FLOAT_PRESETS`). Activation fields are
carried and validated; of activation quantization the dynamic symmetric kinds of
:data:`~autoround.dtypes.act_kinds.ACT_KINDS` are built (per-token INT8 / FP8 W8A8, FP8 per
group, MX per block of 32: the MXFP4, MXFP8, MXFP4_RCEIL, MXFP8_RCEIL, MXINT4 presets;
:func:`require_built` refuses every other such scheme before any work;
:func:`require_weight_only` refuses them all, where only weights are read).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autoround.dtypes import DTYPES
from autoround.dtypes.activations import BUILT_WORDS, activation_problem
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
#: Fields a checkpoint config stores only when set.
_OPTIONAL_FIELDS = (*_ACT_FIELDS, "block_shape")

#: Activation bit widths Intel's presets name (activation quantization itself is not built).
ACT_BITS = (4, 6, 8)
#: Activation data types Intel's presets name: the weight types plus NVFP4's activation variant
#: with a static global scale.
ACT_DATA_TYPES = ("int", "fp", "mx_fp", "mx_fp_rceil", "mx_int", "nv_fp", "nv_fp4_with_static_gs")


@dataclass(frozen=True)
class Scheme:
    """How one layer's weights are quantized.

    Attributes:
        bits: weight bits; 16 keeps the layer unquantized.
        group_size: inputs sharing one scale; -1 per output channel, 0 per tensor. A group size
            that does not divide the input width leaves a partial last group (Intel's rule).
        sym: symmetric (no zero point stored per group) or asymmetric.
        data_type: a name in :data:`autoround.dtypes.DTYPES`.
        act_bits: activation bits; 16 or more is weight-only (8: W8A8, see :func:`require_built`).
        act_group_size: activations sharing one scale (-1 per token, 0 per tensor); None: unset.
        act_sym: symmetric activations; None: unset.
        act_data_type: a name in :data:`ACT_DATA_TYPES`; None: unset (as the weights).
        act_dynamic: activation scales computed per forward (True) or observed once (False).
        block_shape: (rows, columns) 2-D weight tiles sharing one scale instead of row groups
            (Intel's tuple ``group_size``, FP8_BLOCK's (128, 128)); ``group_size`` is then the
            tile's column count. Only data types with tile arithmetic (``DataType.for_tiles``) take it.
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
    block_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        _check_int("bits", self.bits)
        if isinstance(self.group_size, Sequence) and not isinstance(self.group_size, str):
            raise SchemeError(
                f"group_size={self.group_size!r}: a 2-D weight block is block_shape=(rows, columns) "
                "(Scheme.replace and from_dict translate a tuple group_size)"
            )
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
        if self.block_shape is not None:
            self._check_block_shape()
        self._check_activations()

    def _check_block_shape(self) -> None:
        shape = self.block_shape
        if not (
            isinstance(shape, tuple)
            and len(shape) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
        ):
            raise SchemeError(f"block_shape must be two positive integers (rows, columns), got {shape!r}")
        tiled = sorted(name for name, dtype in DTYPES.items() if dtype.for_tiles() is not None)
        if self.is_quantized and DTYPES[self.data_type].for_tiles() is None:
            raise SchemeError(
                f"block_shape={shape} is not allowed for data_type {self.data_type!r}: it quantizes "
                f"row groups (data types with 2-D blocks: {tiled})"
            )
        if self.group_size != shape[1]:
            raise SchemeError(
                f"group_size={self.group_size} with block_shape={shape}: a block scheme's group_size "
                f"is its block's column count (allowed: {shape[1]})"
            )

    def _check_activations(self) -> None:
        for name in ("act_sym", "act_dynamic"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise SchemeError(f"{name} must be True, False or None, got {value!r}")
        if self.act_group_size is not None:
            _check_int("act_group_size", self.act_group_size)
            if self.act_group_size < PER_CHANNEL:
                raise SchemeError(
                    f"act_group_size={self.act_group_size} is invalid; use a positive size, "
                    f"{PER_CHANNEL} (per token) or {PER_TENSOR} (per tensor)"
                )
        if self.is_weight_only:
            return
        if self.act_bits not in ACT_BITS:
            raise SchemeError(
                f"act_bits={self.act_bits} is not allowed; allowed: {list(ACT_BITS)} "
                f"(or {UNQUANTIZED_BITS} for weight-only)"
            )
        if self.act_data_type is not None and self.act_data_type not in ACT_DATA_TYPES:
            raise SchemeError(
                f"unknown act_data_type {self.act_data_type!r}; allowed: {list(ACT_DATA_TYPES)}"
            )

    @property
    def is_quantized(self) -> bool:
        """False for a scheme that keeps the layer in 16 bits."""
        return self.bits != UNQUANTIZED_BITS

    @property
    def is_weight_only(self) -> bool:
        """True unless the scheme quantizes activations (``act_bits`` below 16)."""
        return self.act_bits >= UNQUANTIZED_BITS

    def num_groups(self, in_features: int) -> int:
        """Groups per output row: ceil(in / group), so a partial last group counts as one."""
        if self.group_size in (PER_CHANNEL, PER_TENSOR) or in_features <= self.group_size:
            return 1
        return -(-in_features // self.group_size)

    def replace(self, **overrides: Any) -> Scheme:
        """A copy with some fields changed, validated again. Unknown fields raise SchemeError.

        As in Intel's overrides, a tuple ``group_size`` sets the 2-D block and an integer one
        replaces it (``FP8_BLOCK.replace(group_size=-1)`` is per channel)."""
        _check_fields(overrides)
        return dataclasses.replace(self, **_blocks_translated(overrides))

    def to_dict(self) -> dict[str, Any]:
        """The fields a checkpoint config stores (activation fields and block_shape only when set)."""
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items() if not (k in _OPTIONAL_FIELDS and v is None)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scheme:
        """Build from a mapping of field names; an unknown key raises SchemeError naming it.
        A tuple or list ``group_size`` (Intel's config) or ``block_shape`` list becomes a block."""
        _check_fields(data)
        return cls(**_blocks_translated(data))


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemeError(f"{name} must be an integer, got {value!r}")


#: Intel's spelling of a float or MX type with its bits (``mx_fp4``, ``fp8``, ``nv_fp4``):
#: data_type and bits. (Intel also reads ``int4`` so; ours keeps ``int<n>`` an unknown type.)
_TYPE_WITH_BITS = re.compile(r"^(mx_fp|fp|nv_fp|mx_int)(\d+)$")


def _bits_spelled_out(fields: dict[str, Any], prefix: str = "") -> None:
    """Split Intel's ``mx_fp4``-style ``<prefix>data_type`` into the type and ``<prefix>bits``
    (Intel's ``_reconcile_bits_and_dtype``); explicit bits that disagree are refused."""
    match = _TYPE_WITH_BITS.match(str(fields.get(f"{prefix}data_type")))
    if match is None or match.group(0) in DTYPES:
        return
    bits = int(match.group(2))
    given = fields.get(f"{prefix}bits")
    if given is not None and given != bits:
        raise SchemeError(
            f"{prefix}data_type={match.group(0)!r} means {prefix}bits={bits}, but {prefix}bits={given} "
            f"was given; allowed: {prefix}bits={bits} or {prefix}data_type={match.group(1)!r}"
        )
    fields[f"{prefix}data_type"], fields[f"{prefix}bits"] = match.group(1), bits


def _blocks_translated(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` in our fields: Intel's ``mx_fp4``-style data types split into type and bits; a
    2-sequence ``group_size`` moved to ``block_shape`` (its column count kept as
    ``group_size``), a list ``block_shape`` made a tuple, and an integer ``group_size`` given
    without ``block_shape`` clearing the block."""
    fields = dict(data)
    _bits_spelled_out(fields)
    _bits_spelled_out(fields, "act_")
    group = fields.get("group_size")
    if isinstance(group, Sequence) and not isinstance(group, str) and len(group) == 2:
        fields["block_shape"] = tuple(group)
        fields["group_size"] = group[1]
    elif "group_size" in fields and "block_shape" not in fields:
        fields["block_shape"] = None
    if isinstance(fields.get("block_shape"), list):
        fields["block_shape"] = tuple(fields["block_shape"])
    return fields


def require_weight_only(scheme: Scheme, where: str = "scheme") -> None:
    """Refuse a scheme that quantizes activations, where only weights are read (autoround's
    loaders) or quantized; ``where`` names the scheme in the message. 2-D weight blocks pass: the
    layer quantizers tile them (a :class:`Scheme` takes them for types with ``for_tiles`` only).
    Quantizing checks :func:`require_built` (which accepts W8A8) instead.

    Raises:
        NotImplementedError: naming the field and the weight-only alternative.
    """
    if not scheme.is_weight_only:
        raise NotImplementedError(
            f"{where}: activation quantization (act_bits={scheme.act_bits}, act_data_type="
            f"{scheme.act_data_type!r}) is not built yet; use act_bits={UNQUANTIZED_BITS} for the "
            f"weight-only form of the scheme (e.g. scheme='MXFP4', act_bits={UNQUANTIZED_BITS})"
        )


#: The algorithms that quantize a W8A8 scheme as Intel does: RTN and optimized RTN look at no
#: activations (the layers' inputs are quantized after them); SignRound tunes each block with its
#: layers' inputs quantized (:mod:`autoround.algorithms.act_tuning`). An algorithm added to the
#: registry is refused with activation schemes until it is listed here.
ACT_ALGORITHMS = ("rtn", "opt_rtn", "signround")


def require_built(scheme: Scheme, where: str = "scheme", algorithm: str | None = None) -> None:
    """Refuse, before any work, a scheme the quantizers do not build: activation quantization
    of a kind not built (:data:`~autoround.dtypes.act_kinds.ACT_KINDS`), an activation scheme
    with an algorithm not in :data:`ACT_ALGORITHMS`. ``algorithm`` (a registry name; None: not
    known yet) is checked when given.

    Raises:
        NotImplementedError: naming the field, what is allowed, and the weight-only alternative.
    """
    if not scheme.is_weight_only:
        problem = activation_problem(scheme)
        if problem is not None:
            raise NotImplementedError(
                f"{where}: activation quantization (act_bits={scheme.act_bits}, act_data_type="
                f"{scheme.act_data_type!r}): {problem}. Built: {BUILT_WORDS}; or use "
                f"act_bits={UNQUANTIZED_BITS} for the weight-only form of the scheme"
            )
        if algorithm is not None and algorithm not in ACT_ALGORITHMS:
            act_type = scheme.act_data_type or scheme.data_type
            raise NotImplementedError(
                f"{where}: scheme {scheme.data_type} {scheme.bits}-bit weights with {act_type} "
                f"{scheme.act_bits}-bit activations (act_bits={scheme.act_bits}) with {algorithm} "
                f"is not built yet; algorithms {list(ACT_ALGORITHMS)} quantize this scheme"
            )


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


def _mx(bits: int, data_type: str, act_data_type: str) -> Scheme:
    """Intel's MX presets: blocks of 32; activations of the same bits, dynamic, per block."""
    return Scheme(bits, 32, True, data_type, bits, 32, True, act_data_type, True)


def _int_w_a(bits: int) -> Scheme:
    """Intel's INT4 / INT8: per-channel symmetric weights, per-token dynamic activations."""
    return Scheme(bits, PER_CHANNEL, True, "int", bits, PER_CHANNEL, True, "int", True)


#: Intel 0.16.1's floating-point, MX and W8A8 presets, field for field (compared with Intel's in
#: tests/fixtures/intel/presets.json). Intel's tuple group_size is block_shape. The activations of
#: every one are built (:mod:`autoround.dtypes.act_kinds`; fields no kind implements are refused
#: before work, :func:`require_built`); ``act_bits=16`` gives their weight-only form. Intel
#: has no FP8 dynamic preset: ``FP8_STATIC`` with ``act_dynamic=True, act_group_size=-1`` is FP8
#: W8A8. Not here: NVFP4_E5M3 (data type nvfp4_v2, not built), W4A16_MIXED.
FLOAT_PRESETS: dict[str, Scheme] = {
    "MXFP4": _mx(4, "mx_fp", "mx_fp"),
    "MXFP4_RCEIL": _mx(4, "mx_fp", "mx_fp_rceil"),
    "MXFP6": _mx(6, "mx_fp", "mx_fp"),
    "MXFP8": _mx(8, "mx_fp", "mx_fp"),
    "MXFP8_RCEIL": _mx(8, "mx_fp", "mx_fp_rceil"),
    "MXINT4": _mx(4, "mx_int", "mx_int"),
    "NVFP4": Scheme(4, 16, True, "nv_fp", 4, 16, True, "nv_fp4_with_static_gs", True),
    "FPW8A16": Scheme(8, PER_TENSOR, True, "fp", UNQUANTIZED_BITS, act_data_type="fp"),
    "FP8_BLOCK": Scheme(8, 128, True, "fp", 8, 128, True, "fp", True, block_shape=(128, 128)),
    "FP8_STATIC": Scheme(8, PER_CHANNEL, True, "fp", 8, PER_TENSOR, True, "fp", act_dynamic=False),
    "INT8": _int_w_a(8),
    "INT8_W8A8": _int_w_a(8),  # Intel's deprecated name for INT8
    "INT4": _int_w_a(4),
}

#: Preset name (upper case) -> scheme. Values as in Intel auto-round.
PRESETS: dict[str, Scheme] = {
    **_int_presets(),
    **_gguf_presets(),
    **FLOAT_PRESETS,
    "BF16": Scheme(bits=UNQUANTIZED_BITS, data_type="fp", act_data_type="fp"),
    "W16A16": Scheme(bits=UNQUANTIZED_BITS, data_type="fp", act_data_type="fp"),  # = BF16
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
