"""ggml's block layouts: stored codes and block fields -> the bytes of one tensor.

Each packer takes the codes of every block (blocks, weights per block) as unsigned integers (what
the bits hold), the block's float fields (blocks, k) and its integer fields (blocks, sub-blocks
[, 2]) and returns (blocks, bytes per block) uint8, in the layout of ``ggml-common.h``'s
``block_*`` structs (the ``gguf`` package's ``dequantize`` reads them back; the tests check every
type that way). The float fields are stored as fp16, little-endian, as ggml does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Packer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _half(values: np.ndarray) -> np.ndarray:
    """(blocks, k) float -> (blocks, 2k) bytes of fp16."""
    return np.ascontiguousarray(values.astype("<f2")).view(np.uint8)


def _nibbles(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return (low & 0x0F) | ((high & 0x0F) << 4)


def _high_bits32(codes: np.ndarray) -> np.ndarray:
    """Bit 4 of each of a block's 32 codes, as ggml's little-endian uint32 ``qh``."""
    return np.packbits((codes >> 4) & 1, axis=-1, bitorder="little")


def pack_q4_0(codes: np.ndarray, floats: np.ndarray, ints: np.ndarray) -> np.ndarray:
    return np.concatenate([_half(floats[:, :1]), _nibbles(codes[:, :16], codes[:, 16:])], axis=1)


def pack_q4_1(codes: np.ndarray, floats: np.ndarray, ints: np.ndarray) -> np.ndarray:
    return np.concatenate([_half(floats[:, :2]), _nibbles(codes[:, :16], codes[:, 16:])], axis=1)


def pack_q5_0(codes: np.ndarray, floats: np.ndarray, ints: np.ndarray) -> np.ndarray:
    parts = [_half(floats[:, :1]), _high_bits32(codes), _nibbles(codes[:, :16], codes[:, 16:])]
    return np.concatenate(parts, axis=1)


def pack_q5_1(codes: np.ndarray, floats: np.ndarray, ints: np.ndarray) -> np.ndarray:
    parts = [_half(floats[:, :2]), _high_bits32(codes), _nibbles(codes[:, :16], codes[:, 16:])]
    return np.concatenate(parts, axis=1)


def pack_q8_0(codes: np.ndarray, floats: np.ndarray, ints: np.ndarray) -> np.ndarray:
    signed = (codes.astype(np.int16) - 128).astype(np.int8).view(np.uint8)
    return np.concatenate([_half(floats[:, :1]), signed], axis=1)


def _two_bit_planes(codes: np.ndarray) -> np.ndarray:
    """q2_K / q3_K ``qs``: per 128 weights, 32 bytes holding 4 planes of 2 bits (weights l, l+32,
    l+64, l+96)."""
    halves = codes.reshape(-1, 2, 4, 32) & 0x03
    packed = halves[:, :, 0] | (halves[:, :, 1] << 2) | (halves[:, :, 2] << 4) | (halves[:, :, 3] << 6)
    return packed.reshape(codes.shape[0], 64)


def pack_q2_k(codes: np.ndarray, floats: np.ndarray, ints: np.ndarray) -> np.ndarray:
    scales = (ints[:, :, 0] & 0x0F) | ((ints[:, :, 1] & 0x0F) << 4)
    return np.concatenate([scales.astype(np.uint8), _two_bit_planes(codes), _half(floats[:, :2])], axis=1)


def pack_q3_k(codes: np.ndarray, floats: np.ndarray, ints: np.ndarray) -> np.ndarray:
    high = (codes >> 2) & 1
    # weight j's high bit goes to byte j % 32, bit j // 32
    hmask = np.packbits(high.reshape(-1, 8, 32).transpose(0, 2, 1), axis=-1, bitorder="little")
    raw = (ints[:, :, 0] + 32).astype(np.uint8)  # 16 six-bit scales
    scales = np.zeros((codes.shape[0], 12), dtype=np.uint8)
    scales[:, :8] = (raw[:, :8] & 0x0F) | ((raw[:, 8:] & 0x0F) << 4)
    top = raw >> 4
    for j in range(16):
        scales[:, 8 + j % 4] |= top[:, j] << (2 * (j // 4))
    parts = [hmask.reshape(-1, 32), _two_bit_planes(codes), scales, _half(floats[:, :1])]
    return np.concatenate(parts, axis=1)


def _k4_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """q4_K / q5_K: eight 6-bit scales and mins in 12 bytes (``get_scale_min_k4``'s inverse)."""
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    out[:, :4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    out[:, 4:8] = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    out[:, 8:] = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    return out


def pack_q4_k(codes: np.ndarray, floats: np.ndarray, ints: np.ndarray) -> np.ndarray:
    pairs = codes.reshape(-1, 4, 2, 32)
    qs = _nibbles(pairs[:, :, 0], pairs[:, :, 1]).reshape(-1, 128)
    sc, m = ints[:, :, 0].astype(np.uint8), ints[:, :, 1].astype(np.uint8)
    return np.concatenate([_half(floats[:, :2]), _k4_scales(sc, m), qs], axis=1)


def pack_q5_k(codes: np.ndarray, floats: np.ndarray, ints: np.ndarray) -> np.ndarray:
    pairs = codes.reshape(-1, 4, 2, 32)
    qs = _nibbles(pairs[:, :, 0], pairs[:, :, 1]).reshape(-1, 128)
    # weight j's fifth bit goes to byte j % 32, bit j // 32
    high = ((codes >> 4) & 1).reshape(-1, 8, 32).transpose(0, 2, 1)
    qh = np.packbits(high, axis=-1, bitorder="little").reshape(-1, 32)
    sc, m = ints[:, :, 0].astype(np.uint8), ints[:, :, 1].astype(np.uint8)
    return np.concatenate([_half(floats[:, :2]), _k4_scales(sc, m), qh, qs], axis=1)


def pack_q6_k(codes: np.ndarray, floats: np.ndarray, ints: np.ndarray) -> np.ndarray:
    quads = codes.reshape(-1, 2, 4, 32)  # per 128 weights: planes l, l+32, l+64, l+96
    low = quads & 0x0F
    ql = np.concatenate([_nibbles(low[:, :, 0], low[:, :, 2]), _nibbles(low[:, :, 1], low[:, :, 3])], axis=2)
    top = (quads >> 4) & 0x03
    qh = top[:, :, 0] | (top[:, :, 1] << 2) | (top[:, :, 2] << 4) | (top[:, :, 3] << 6)
    scales = ints[:, :, 0].astype(np.int8).view(np.uint8)
    return np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), scales, _half(floats[:, :1])], axis=1)


#: ggml type name -> packer.
PACKERS: dict[str, Packer] = {
    "q4_0": pack_q4_0,
    "q4_1": pack_q4_1,
    "q5_0": pack_q5_0,
    "q5_1": pack_q5_1,
    "q8_0": pack_q8_0,
    "q2_k": pack_q2_k,
    "q3_k": pack_q3_k,
    "q4_k": pack_q4_k,
    "q5_k": pack_q5_k,
    "q6_k": pack_q6_k,
}
