"""Pack integer codes into int32 words in GPTQ order, and back.

The layout is a little-endian bit stream: along the packed dimension, value ``i`` occupies
stream bits ``[bits*i, bits*(i+1))`` and stream bit ``b`` is bit ``b % 32`` of word ``b // 32``.
For 2, 4 and 8 bits no value crosses a word, so word ``k`` simply holds values
``k*(32//bits) ... `` with the first in the lowest bits. For 3 bits, 32 values fill three words
and two values straddle a boundary: value 10 (bits 30-31 of word 0, bit 0 of word 1) and value
21 (bit 31 of word 1, bits 0-1 of word 2). This is bit-for-bit GPTQ's and Intel's
``pack_3bits`` layout.

Words are stored as int32 because safetensors and the kernels expect that dtype; a word whose
bit 31 is set (e.g. a 4-bit code of 8 or more in the last nibble) is therefore negative.

Both functions take 2-D tensors, work on any device, and are vectorized: the only Python loop
is over the words of one block (one word for 2/4/8 bits, three for 3 bits).
"""

from __future__ import annotations

import math

import torch

#: Bit widths with a defined GPTQ int32 layout.
SUPPORTED_BITS = (2, 3, 4, 8)

_WORD_BITS = 32
_WORD_MASK = (1 << _WORD_BITS) - 1
_SIGN_BIT = 1 << (_WORD_BITS - 1)


def gptq_shapes(bits: int, groups: int, in_features: int, out_features: int) -> dict[str, tuple[int, int]]:
    """Shapes of a layer's ``qweight`` (codes packed along the input dimension), ``qzeros``
    (zero points packed along the output dimension) and ``scales`` in the GPTQ layout."""
    return {
        "qweight": (in_features * bits // _WORD_BITS, out_features),
        "qzeros": (groups, out_features * bits // _WORD_BITS),
        "scales": (groups, out_features),
    }


def pack_int32(codes: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Pack unsigned integer codes into int32 words along ``dim``.

    Args:
        codes: 2-D integer tensor (any integer dtype) with values in ``[0, 2**bits - 1]``.
        bits: code width, one of :data:`SUPPORTED_BITS`.
        dim: the dimension to pack along (0, 1, -1 or -2); its size must be a multiple of
            ``32 // bits`` for 2/4/8 bits and of 32 for 3 bits.

    Returns:
        A contiguous int32 tensor, ``dim`` shrunk by ``32 / bits``, on the device of ``codes``.

    Raises:
        ValueError: unsupported ``bits``, a tensor that is not 2-D, a bad size along ``dim``,
            or a code out of range.
        TypeError: ``codes`` is not an integer tensor.
    """
    _check_bits(bits)
    _check_2d(codes, "codes")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got dtype {codes.dtype}")
    values_per_block, words_per_block = _block(bits)
    rows = codes.movedim(dim, -1)
    _check_multiple(rows.shape[-1], values_per_block, bits, "codes", dim)
    _check_range(codes, bits)

    # int64 so a field shifted past bit 31 is kept, not wrapped, until the final reinterpretation.
    n_rows, n_blocks = rows.shape[0], rows.shape[1] // values_per_block
    blocks = rows.reshape(n_rows, n_blocks, values_per_block).to(torch.int64)
    words = [_pack_word(blocks, bits, w) for w in range(words_per_block)]
    unsigned = torch.stack(words, dim=-1).reshape(n_rows, n_blocks * words_per_block)
    # Two's-complement reinterpretation of [0, 2**32) as int32, without relying on overflow.
    signed = ((unsigned ^ _SIGN_BIT) - _SIGN_BIT).to(torch.int32)
    return signed.movedim(-1, dim).contiguous()


def unpack_int32(packed: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Exact inverse of :func:`pack_int32`: int32 words to codes along ``dim``.

    Args:
        packed: 2-D int32 tensor as produced by :func:`pack_int32`.
        bits: code width, one of :data:`SUPPORTED_BITS`.
        dim: the dimension that was packed (0, 1, -1 or -2); for 3 bits its size must be a
            multiple of 3 (32 values fill 3 words).

    Returns:
        A contiguous uint8 tensor of codes in ``[0, 2**bits - 1]``, ``dim`` grown by ``32 / bits``.
        uint8 because every supported code fits in a byte; cast before arithmetic that can go
        negative (e.g. ``code - zero``).

    Raises:
        ValueError: unsupported ``bits``, a tensor that is not 2-D or a bad size along ``dim``.
        TypeError: ``packed`` is not int32.
    """
    _check_bits(bits)
    _check_2d(packed, "packed")
    if packed.dtype != torch.int32:
        raise TypeError(f"packed must be an int32 tensor, got dtype {packed.dtype}")
    values_per_block, words_per_block = _block(bits)
    rows = packed.movedim(dim, -1)
    _check_multiple(rows.shape[-1], words_per_block, bits, "packed", dim)

    n_rows, n_blocks = rows.shape[0], rows.shape[1] // words_per_block
    words = rows.reshape(n_rows, n_blocks, words_per_block)
    first, offset, next_word, low_width = _value_positions(bits, values_per_block, packed.device)
    # Arithmetic right shifts of negative words drag in sign bits, but only above the field,
    # and the masks below drop them; so int32 is safe and half the memory of int64.
    low = (words.index_select(-1, first) >> offset) & ((1 << low_width) - 1)
    high_width = bits - low_width
    high = (words.index_select(-1, next_word) & ((1 << high_width) - 1)) << low_width
    codes = (low | high).to(torch.uint8).reshape(n_rows, n_blocks * values_per_block)
    return codes.movedim(-1, dim).contiguous()


def _pack_word(blocks: torch.Tensor, bits: int, word: int) -> torch.Tensor:
    """Word ``word`` of every block: the fields of all values overlapping its 32 bits."""
    start_bit = word * _WORD_BITS
    first = start_bit // bits
    last = math.ceil((start_bit + _WORD_BITS) / bits)  # exclusive
    # A value starting before this word (a straddler's upper part) is shifted right instead.
    rel = torch.arange(first, last, device=blocks.device, dtype=torch.int64) * bits - start_bit
    fields = (blocks[..., first:last] >> (-rel).clamp(min=0)) << rel.clamp(min=0)
    # Fields are disjoint, so the sum is their bitwise OR; the mask drops a straddler's
    # bits beyond this word (they belong to the next one).
    return fields.sum(dim=-1) & _WORD_MASK


def _value_positions(
    bits: int, values_per_block: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per value of a block: its word, bit offset, the next word and how many bits fit before it.

    For a value that does not straddle, ``low_width == bits`` and its (empty) high part reads
    the same word through a zero mask.
    """
    start = torch.arange(values_per_block, device=device, dtype=torch.int32) * bits
    first = start // _WORD_BITS
    offset = start % _WORD_BITS
    low_width = (_WORD_BITS - offset).clamp(max=bits)
    words_per_block = values_per_block * bits // _WORD_BITS
    next_word = (first + 1).clamp(max=words_per_block - 1)
    return first, offset, next_word, low_width


def _block(bits: int) -> tuple[int, int]:
    """The smallest (values, words) whole block: (32 // bits, 1) for 2/4/8, (32, 3) for 3."""
    common = math.gcd(_WORD_BITS, bits)
    return _WORD_BITS // common, bits // common


def _check_bits(bits: int) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits!r} has no int32 packing; allowed: {SUPPORTED_BITS}")


def _check_2d(tensor: torch.Tensor, name: str) -> None:
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(tensor.shape)}")


def _check_multiple(size: int, multiple: int, bits: int, name: str, dim: int) -> None:
    if size % multiple:
        raise ValueError(
            f"{name} has size {size} along dim {dim}, which at bits={bits} must be a multiple of {multiple}"
        )


def _check_range(codes: torch.Tensor, bits: int) -> None:
    if codes.numel() == 0:
        return
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= 1 << bits:
        raise ValueError(
            f"codes span [{low}, {high}], but {bits}-bit codes must lie in [0, {(1 << bits) - 1}]"
        )
