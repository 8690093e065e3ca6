"""GPTQ int32 packing: bit-exact against plain-Python references, round trips, refusals."""

from __future__ import annotations

import pytest
import torch

from autoround.packing import SUPPORTED_BITS, pack_int32, unpack_int32


def _as_int32(word: int) -> int:
    """The signed int32 that has the same 32 bits as the unsigned ``word``."""
    return word - 2**32 if word >= 2**31 else word


def _reference_word_aligned(values: list[int], bits: int) -> list[int]:
    """GPTQ 2/4/8-bit: 32 // bits values per word, value j of a word at bit offset bits * j."""
    per_word = 32 // bits
    words = []
    for start in range(0, len(values), per_word):
        word = 0
        for j, value in enumerate(values[start : start + per_word]):
            word |= value << (bits * j)
        words.append(_as_int32(word))
    return words


def _reference_3bit(values: list[int]) -> list[int]:
    """GPTQ 3-bit, spelled out as GPTQ writes it: 32 values into 3 words per block.

    word 0: values 0-9 at 3j, the low 2 bits of value 10 at bits 30-31;
    word 1: value 10's top bit at bit 0, values 11-20 at 3j + 1, value 21's low bit at bit 31;
    word 2: value 21's top 2 bits at bits 0-1, values 22-31 at 3j + 2.
    """
    words = []
    for start in range(0, len(values), 32):
        v = values[start : start + 32]
        w0 = sum(v[j] << (3 * j) for j in range(10)) | ((v[10] & 0b11) << 30)
        w1 = (v[10] >> 2) | sum(v[11 + j] << (3 * j + 1) for j in range(10)) | ((v[21] & 1) << 31)
        w2 = (v[21] >> 1) | sum(v[22 + j] << (3 * j + 2) for j in range(10))
        words += [_as_int32(w0), _as_int32(w1), _as_int32(w2)]
    return words


def _reference_pack(codes: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Pack each line along ``dim`` with the Python references above."""
    lines = codes.movedim(dim, -1).tolist()
    pack_line = _reference_3bit if bits == 3 else lambda line: _reference_word_aligned(line, bits)
    packed = torch.tensor([pack_line(line) for line in lines], dtype=torch.int32)
    return packed.movedim(-1, dim)


def _multiple(bits: int) -> int:
    return 32 if bits == 3 else 32 // bits


def _random_codes(bits: int, shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**bits, shape, generator=generator, dtype=torch.uint8)


# --- known vectors -------------------------------------------------------------------------


def test_4bit_sevens_pack_to_0x77777777() -> None:
    packed = pack_int32(torch.full((1, 8), 7), 4, dim=1)
    assert packed.dtype == torch.int32
    assert packed.item() == 0x77777777 == 2004318071


def test_top_code_in_last_nibble_makes_a_negative_int32() -> None:
    codes = torch.full((1, 8), 7)
    codes[0, 7] = 15
    assert pack_int32(codes, 4, dim=1).item() == 0xF7777777 - 2**32 == -143165577


def test_first_value_sits_in_the_lowest_bits() -> None:
    assert pack_int32(torch.tensor([[1, 2, 3, 4]]), 8, dim=1).item() == 0x04030201
    assert pack_int32(torch.tensor([[1] + [0] * 15]), 2, dim=1).item() == 1


def test_3bit_value_10_straddles_words_0_and_1() -> None:
    codes = torch.zeros(1, 32, dtype=torch.uint8)
    codes[0, 10] = 0b111
    assert pack_int32(codes, 3, dim=1).tolist() == [[_as_int32(0b11 << 30), 0b1, 0]]


def test_3bit_value_21_straddles_words_1_and_2() -> None:
    codes = torch.zeros(1, 32, dtype=torch.uint8)
    codes[0, 21] = 0b111
    assert pack_int32(codes, 3, dim=1).tolist() == [[0, -(2**31), 0b11]]


# --- bit-exact against the references, and round trips -------------------------------------


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
@pytest.mark.parametrize("dim", [0, 1, -1, -2])
def test_pack_matches_the_python_reference(bits: int, dim: int) -> None:
    shape = [5, 3]
    shape[dim] = 2 * _multiple(bits)
    codes = _random_codes(bits, (shape[0], shape[1]), seed=bits)
    assert torch.equal(pack_int32(codes, bits, dim), _reference_pack(codes, bits, dim))


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_top_codes_everywhere_match_the_reference(bits: int) -> None:
    codes = torch.full((2, 32), 2**bits - 1)
    packed = pack_int32(codes, bits, dim=1)
    assert torch.equal(packed, _reference_pack(codes, bits, 1))
    assert torch.all(packed == -1), "every bit set"


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
@pytest.mark.parametrize("shape", [(576, 7), (96, 33), (32, 1), (1152, 3)])
def test_round_trip_along_either_dim(bits: int, shape: tuple[int, int]) -> None:
    codes = _random_codes(bits, shape, seed=shape[1])
    for dim, tensor in ((0, codes), (1, codes.t())):
        unpacked = unpack_int32(pack_int32(tensor, bits, dim), bits, dim)
        assert unpacked.dtype == torch.uint8 and unpacked.is_contiguous()
        assert torch.equal(unpacked, tensor)


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_unpack_matches_the_reference_packing(bits: int) -> None:
    codes = _random_codes(bits, (3, 64), seed=7)
    assert torch.equal(unpack_int32(_reference_pack(codes, bits, 1), bits, dim=1), codes)


def test_packed_shape_and_contiguity() -> None:
    codes = _random_codes(4, (64, 24))
    assert pack_int32(codes, 4, dim=0).shape == (8, 24)
    assert pack_int32(codes, 4, dim=1).shape == (64, 3)
    assert pack_int32(codes, 4, dim=0).is_contiguous()
    assert pack_int32(_random_codes(3, (64, 5)), 3, dim=0).shape == (6, 5)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_any_integer_dtype_packs_the_same(dtype: torch.dtype) -> None:
    codes = _random_codes(4, (16, 8))
    assert torch.equal(pack_int32(codes.to(dtype), 4, dim=0), pack_int32(codes, 4, dim=0))


def test_non_contiguous_input() -> None:
    codes = _random_codes(4, (16, 64))[:, ::2]
    assert torch.equal(pack_int32(codes, 4, dim=1), _reference_pack(codes, 4, 1))


def test_empty_tensor_packs_to_empty() -> None:
    packed = pack_int32(torch.zeros(0, 8, dtype=torch.uint8), 4, dim=1)
    assert packed.shape == (0, 1)
    assert unpack_int32(packed, 4, dim=1).shape == (0, 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_cuda_matches_cpu(bits: int) -> None:
    codes = _random_codes(bits, (96, 64))
    packed = pack_int32(codes.cuda(), bits, dim=0)
    assert packed.is_cuda
    assert torch.equal(packed.cpu(), pack_int32(codes, bits, dim=0))
    assert torch.equal(unpack_int32(packed, bits, dim=0).cpu(), codes)


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [1, 5, 6, 16, 32])
def test_unsupported_bits_are_refused_with_the_allowed_ones(bits: int) -> None:
    with pytest.raises(ValueError, match=rf"bits={bits}.*\(2, 3, 4, 8\)"):
        pack_int32(torch.zeros(4, 32, dtype=torch.uint8), bits, dim=1)
    with pytest.raises(ValueError, match=rf"bits={bits}"):
        unpack_int32(torch.zeros(4, 3, dtype=torch.int32), bits, dim=1)


@pytest.mark.parametrize(("bits", "size", "multiple"), [(4, 12, 8), (2, 8, 16), (8, 6, 4), (3, 16, 32)])
def test_size_not_a_multiple_is_refused(bits: int, size: int, multiple: int) -> None:
    with pytest.raises(ValueError, match=rf"size {size}.*bits={bits}.*multiple of {multiple}"):
        pack_int32(torch.zeros(2, size, dtype=torch.uint8), bits, dim=1)


def test_3bit_packed_size_not_a_multiple_of_3_is_refused() -> None:
    with pytest.raises(ValueError, match=r"size 4.*bits=3.*multiple of 3"):
        unpack_int32(torch.zeros(2, 4, dtype=torch.int32), 3, dim=1)


@pytest.mark.parametrize(("bits", "bad"), [(4, 16), (4, -1), (2, 4), (3, 8), (8, 256)])
def test_codes_out_of_range_are_refused(bits: int, bad: int) -> None:
    codes = torch.zeros(2, 32, dtype=torch.int64)
    codes[1, 5] = bad
    with pytest.raises(ValueError, match=rf"\[0, {2**bits - 1}\]"):
        pack_int32(codes, bits, dim=1)


@pytest.mark.parametrize("shape", [(32,), (2, 2, 32)])
def test_only_2d_tensors(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="2-D"):
        pack_int32(torch.zeros(shape, dtype=torch.uint8), 4, dim=-1)


def test_float_codes_and_non_int32_words_are_refused() -> None:
    with pytest.raises(TypeError, match="float32"):
        pack_int32(torch.zeros(2, 8), 4, dim=1)
    with pytest.raises(TypeError, match="int64"):
        unpack_int32(torch.zeros(2, 1, dtype=torch.int64), 4, dim=1)
