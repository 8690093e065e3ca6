"""Schemes are validated data; presets follow Intel auto-round's names and values."""

from __future__ import annotations

import pytest

from autoround.errors import SchemeError
from autoround.schemes import PRESETS, Scheme, parse_scheme


@pytest.mark.parametrize(
    ("name", "bits", "group"),
    [
        ("W2A16", 2, 128),
        ("W2A16G32", 2, 32),
        ("W2A16G64", 2, 64),
        ("W3A16", 3, 128),
        ("W4A16", 4, 128),
        ("W8A16", 8, 128),
    ],
)
def test_presets_have_intels_values(name: str, bits: int, group: int) -> None:
    scheme = PRESETS[name]
    assert (scheme.bits, scheme.group_size, scheme.sym, scheme.data_type) == (bits, group, True, "int")


def test_every_preset_parses_case_insensitively() -> None:
    for name in PRESETS:
        assert parse_scheme(name.lower()) == PRESETS[name]


def test_overrides_apply_on_top_of_a_preset_and_none_passes_through() -> None:
    scheme = parse_scheme("w4a16", bits=None, group_size=64, sym=False)
    assert (scheme.bits, scheme.group_size, scheme.sym) == (4, 64, False)


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(SchemeError, match=r"unknown scheme 'W5A9'.*W4A16"):
        parse_scheme("W5A9")


@pytest.mark.parametrize("bits", [1, 9, 0, 32])
def test_bits_outside_2_to_8_are_refused_with_the_allowed_values(bits: int) -> None:
    with pytest.raises(SchemeError, match=rf"bits={bits} .*allowed: \[2, 3, 4, 5, 6, 7, 8\]"):
        Scheme(bits=bits)


def test_group_size_below_minus_one_is_refused() -> None:
    with pytest.raises(SchemeError, match=r"group_size=-2 is invalid"):
        Scheme(group_size=-2)


def test_unknown_data_type_lists_the_valid_ones() -> None:
    with pytest.raises(SchemeError, match=r"unknown data_type 'int5'.*'int'"):
        Scheme(data_type="int5")


def test_unknown_field_is_named() -> None:
    with pytest.raises(SchemeError, match=r"unknown scheme field\(s\) \['bitz'\]"):
        parse_scheme("W4A16", bitz=3)


def test_sixteen_bits_means_unquantized() -> None:
    assert not PRESETS["BF16"].is_quantized
    assert not Scheme(bits=16).is_quantized


def test_activation_quantization_is_not_built_yet() -> None:
    with pytest.raises(NotImplementedError, match="activation quantization"):
        Scheme(act_bits=8)


@pytest.mark.parametrize(
    ("in_features", "group", "groups"),
    [(576, 128, 5), (512, 128, 4), (96, 128, 1), (576, -1, 1), (576, 0, 1)],
)
def test_a_partial_last_group_counts_as_a_group(in_features: int, group: int, groups: int) -> None:
    assert Scheme(group_size=group).num_groups(in_features) == groups
