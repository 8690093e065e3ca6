"""Bits a layer costs under a scheme, counted as Intel auto-round's AutoScheme counts them.

Intel 0.16.1 (``auto_round.auto_scheme.utils.compute_layer_bits``) counts, for a layer of
``out x in`` weights:

* a 16-bit layer, or any layer with ``ignore_scale_zp_bits``: ``bits * out * in``;
* otherwise ``bits * out * in`` plus, per group (``out * ceil(in / group_size)`` groups; one per
  row for ``group_size=-1``, one in all for ``0``), a 16-bit scale (8-bit for MX / NV floats)
  and a ``bits``-wide zero point, counted for every integer type, symmetric ones included;
* for llama.cpp's K-quants, instead of those: per group a scale and a minimum of the super-block
  type's bits (``q4_k``: 6), and per super-block of groups two 32-bit floats.

So W4A16 (group 128) costs 4 + 20/128 = 4.156 bits per weight, W2A16G64 2 + 18/64 = 2.281, W8A16
8 + 24/128 = 8.188, GGUF:Q4_K_M 4 + 12/32 + 64/256 = 4.625. A partial last group counts whole.
"""

from __future__ import annotations

from autoround.schemes import PER_CHANNEL, PER_TENSOR, UNQUANTIZED_BITS, Scheme

#: Intel's GGUF facts for the K-quants, by bits: (bits of each group's scale and minimum,
#: groups per super-block).
K_QUANT_SUPER = {2: (4, 16), 3: (6, 16), 4: (6, 8), 5: (6, 8), 6: (8, 16)}
#: Bits of one super-block's two float fields (Intel: ``32 * 2``).
SUPER_BLOCK_FIELD_BITS = 64
#: Data types whose group scale Intel counts as 8 bits (the rest: 16).
EIGHT_BIT_SCALE_TYPES = ("mx_fp", "nv_fp", "fp4")
#: Data types Intel names with "int" (its rule counts their zero point even when symmetric);
#: llama.cpp's 32-weight types are ``int`` / ``int_asym_float_zp`` in Intel's presets.
INT_LIKE_TYPES = ("int", "gguf")
SCALE_BITS = 16
SMALL_SCALE_BITS = 8


def group_count(scheme: Scheme, out_features: int, in_features: int) -> int:
    """Groups of a layer as Intel counts them: ``out * ceil(in / group)``, one per row for
    ``group_size=-1``, one in all for ``0``."""
    if scheme.group_size == PER_TENSOR:
        return 1
    if scheme.group_size == PER_CHANNEL:
        return out_features
    return out_features * -(-in_features // scheme.group_size)


def layer_bits(
    scheme: Scheme | None, out_features: int, in_features: int, ignore_scale_zp_bits: bool = False
) -> int:
    """Bits an ``out x in`` layer costs under ``scheme`` (None: kept in 16 bits)."""
    weights = out_features * in_features
    if scheme is None or not scheme.is_quantized:
        return UNQUANTIZED_BITS * weights
    if ignore_scale_zp_bits:
        return scheme.bits * weights
    groups = group_count(scheme, out_features, in_features)
    return scheme.bits * weights + _side_bits(scheme, groups)


def _side_bits(scheme: Scheme, groups: int) -> int:
    """The scales', zero points' (or K-quant fields') bits of ``groups`` groups."""
    if scheme.data_type == "gguf_k":
        field_bits, per_super = K_QUANT_SUPER[scheme.bits]
        return groups * field_bits * 2 + -(-groups // per_super) * SUPER_BLOCK_FIELD_BITS
    scale = SMALL_SCALE_BITS if any(t in scheme.data_type for t in EIGHT_BIT_SCALE_TYPES) else SCALE_BITS
    zero = scheme.bits if (not scheme.sym or scheme.data_type in INT_LIKE_TYPES) else 0
    return groups * (scale + zero)


def nominal_bits(scheme: Scheme, ignore_scale_zp_bits: bool = False) -> float:
    """Bits per weight of a wide layer whose width is a multiple of the group (for messages)."""
    width = max(scheme.group_size, 1) * 32 if scheme.group_size > 0 else 4096
    return layer_bits(scheme, 256, width, ignore_scale_zp_bits) / (256 * width)
