"""A layer's bits are counted as Intel auto-round 0.16.1's AutoScheme counts them.

The expected numbers are what Intel's ``auto_round.auto_scheme.utils.compute_layer_bits`` returned
for an ``nn.Linear`` carrying each preset's fields (run in its venv, 2026-12-06), and the plain
formula beside them says where each comes from.
"""

from __future__ import annotations

import pytest

from autoround import Scheme, parse_scheme
from autoround.auto_scheme import group_count, layer_bits

#: (preset, (out, in)) -> (bits, bits with ignore_scale_zp_bits), from Intel's compute_layer_bits.
INTEL_BITS = {
    ("W4A16", (64, 256)): (68096, 65536),
    ("W4A16", (96, 160)): (65280, 61440),
    ("W4A16", (32, 96)): (12928, 12288),
    ("W2A16G64", (64, 256)): (37376, 32768),
    ("W2A16G64", (96, 160)): (35904, 30720),
    ("W8A16", (64, 256)): (134144, 131072),
    ("W3A16G32", (96, 160)): (55200, 46080),
    ("GGUF:Q4_K_M", (64, 256)): (75776, 65536),
    ("GGUF:Q4_K_M", (96, 160)): (71040, 61440),
    ("GGUF:Q2_K_S", (64, 256)): (45056, 32768),
    ("GGUF:Q6_K", (96, 160)): (111360, 92160),
    ("GGUF:Q4_0", (64, 256)): (75776, 65536),
    ("GGUF:Q8_0", (32, 96)): (26880, 24576),
    ("GGUF:Q4_1", (96, 160)): (71040, 61440),
    ("BF16", (64, 256)): (262144, 262144),
}


@pytest.mark.parametrize(("preset", "shape"), sorted(INTEL_BITS))
def test_bits_match_intels_count(preset: str, shape: tuple[int, int]) -> None:
    scheme = parse_scheme(preset)
    assert (layer_bits(scheme, *shape), layer_bits(scheme, *shape, ignore_scale_zp_bits=True)) == INTEL_BITS[
        (preset, shape)
    ]


def test_w4a16_on_one_small_layer_is_weight_bits_plus_a_scale_and_zero_point_per_group() -> None:
    out, inputs = 64, 256  # two groups of 128 per row
    weight_bits = 4 * out * inputs
    per_group = 16 + 4  # fp16 scale + a 4-bit zero point (Intel counts it for symmetric ints too)
    assert layer_bits(parse_scheme("W4A16"), out, inputs) == weight_bits + out * 2 * per_group
    assert layer_bits(parse_scheme("W4A16"), out, inputs, ignore_scale_zp_bits=True) == weight_bits


def test_a_partial_last_group_counts_whole() -> None:
    # 160 inputs at group 128: two groups per row, the second of 32 inputs
    assert group_count(parse_scheme("W4A16"), 96, 160) == 96 * 2
    assert layer_bits(parse_scheme("W4A16"), 96, 160) == 4 * 96 * 160 + 96 * 2 * 20


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        (Scheme(bits=4, group_size=128, sym=False), 65536 + 128 * 20),  # asym: the same count
        (Scheme(bits=4, group_size=-1), 65536 + 64 * 20),  # one group per row (Intel: 66816)
        (Scheme(bits=4, group_size=0), 65536 + 20),  # one group in all (Intel: 65556)
        (Scheme(bits=4, group_size=32, data_type="mx_fp"), 65536 + 64 * 8 * 8),  # 8-bit scale, no zero
    ],
)
def test_group_layouts_and_data_types_count_as_intels(scheme: Scheme, expected: int) -> None:
    assert layer_bits(scheme, 64, 256) == expected


def test_a_k_quant_counts_its_sub_block_fields_and_super_block_floats() -> None:
    groups = 64 * 256 // 32  # q4_k: groups of 32, 6-bit scale and minimum each, 8 groups a super-block
    assert (
        layer_bits(parse_scheme("GGUF:Q4_K_M"), 64, 256) == 4 * 64 * 256 + groups * 6 * 2 + groups // 8 * 64
    )


def test_an_unquantized_layer_costs_sixteen_bits_a_weight() -> None:
    assert layer_bits(None, 32, 96) == layer_bits(parse_scheme("BF16"), 32, 96) == 16 * 32 * 96
