"""AutoScheme is validated on creation: every bad value is refused naming it and what is allowed."""

from __future__ import annotations

import logging

import pytest

from autoround import AutoScheme, Scheme, parse_scheme
from autoround.errors import SchemeError


def test_options_are_read_from_a_string_of_preset_names_in_any_case_and_separator() -> None:
    auto = AutoScheme(avg_bits=3, options="w2a16g64, W4A16  w8a16")
    assert auto.options == ("W2A16G64", "W4A16", "W8A16")
    assert auto.schemes == tuple(parse_scheme(n) for n in ("W2A16G64", "W4A16", "W8A16"))


def test_options_may_be_schemes_and_field_mappings() -> None:
    auto = AutoScheme(
        avg_bits=3, options=[Scheme(bits=2, group_size=32), {"bits": 3, "group_size": 64}, "W4A16"]
    )
    assert auto.options == ("W2A16G32", "W3A16G64", "W4A16")
    odd = AutoScheme(avg_bits=3, options=[Scheme(bits=3, group_size=48, sym=False), "W4A16"])
    assert odd.options[0] == "int W3 G48 asym"


def test_duplicate_options_are_dropped_keeping_the_first_name(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="autoround"):
        auto = AutoScheme(avg_bits=4.5, options="GGUF:Q4_K_S,GGUF:Q4_K_M,GGUF:Q6_K")
    assert auto.options == ("GGUF:Q4_K_S", "GGUF:Q6_K")
    assert "GGUF:Q4_K_M dropped" in caplog.text


@pytest.mark.parametrize("options", ["", " , ", [], ()])
def test_empty_options_are_refused(options) -> None:
    with pytest.raises(SchemeError, match="AutoScheme options is empty; give the candidate schemes"):
        AutoScheme(avg_bits=3, options=options)


def test_an_unknown_option_is_refused_naming_it_and_the_presets() -> None:
    with pytest.raises(
        SchemeError, match=r"unknown AutoScheme option 'W9A16'; allowed: the presets \[.*'W4A16'"
    ):
        AutoScheme(avg_bits=3, options="W2A16,W9A16")


def test_an_invalid_option_mapping_is_refused_naming_it() -> None:
    with pytest.raises(SchemeError, match=r"AutoScheme option \{'bits': 9\}: bits=9 is not allowed"):
        AutoScheme(avg_bits=3, options=["W2A16", {"bits": 9}])


def test_only_sixteen_bit_options_are_refused() -> None:
    with pytest.raises(SchemeError, match=r"options \['BF16'\] keep every layer in 16 bits"):
        AutoScheme(avg_bits=16, options="BF16,W16A16")


@pytest.mark.parametrize("avg_bits", [0, -1.5, 16.5, float("nan"), float("inf"), True, "3", [3.0, 4.5], None])
def test_an_avg_bits_that_no_model_can_meet_is_refused_naming_it(avg_bits) -> None:
    with pytest.raises(SchemeError, match=rf"AutoScheme avg_bits.*{avg_bits!r}"):
        AutoScheme(avg_bits=avg_bits, options="W2A16,W4A16")


@pytest.mark.parametrize(
    ("shared", "message"),
    [
        ("q_proj", "shared_layers must be a list of groups"),
        (["q_proj", "k_proj"], "each group must be a non-empty list"),
        ([[]], "each group must be a non-empty list"),
        ([["q_proj", 3]], "holds a non-string or empty name"),
    ],
)
def test_malformed_shared_layers_are_refused(shared, message) -> None:
    with pytest.raises(SchemeError, match=message):
        AutoScheme(avg_bits=3, options="W2A16,W4A16", shared_layers=shared)


def test_shared_layers_become_tuples() -> None:
    auto = AutoScheme(avg_bits=3, options="W2A16,W4A16", shared_layers=[["q_proj", "k_proj"], ["down_proj"]])
    assert auto.shared_layers == (("q_proj", "k_proj"), ("down_proj",))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("method", "greedy", r"method='greedy' is not built; allowed: \['default', 'block'\]"),
        ("nsamples", 0, "nsamples must be a positive integer or None, got 0"),
        ("seqlen", 12.5, "seqlen must be a positive integer"),
        ("batch_size", True, "batch_size must be a positive integer"),
        ("ignore_scale_zp_bits", "yes", "ignore_scale_zp_bits must be True or False"),
        ("dataset", ["a text"], "dataset must be a dataset spec string"),
    ],
)
def test_other_bad_fields_are_refused_naming_the_value(field, value, message) -> None:
    with pytest.raises(SchemeError, match=message):
        AutoScheme(avg_bits=3, options="W2A16,W4A16", **{field: value})


def test_intels_placement_fields_are_accepted_with_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="autoround"):
        AutoScheme(avg_bits=3, options="W2A16,W4A16", device_map="0,1", low_gpu_mem_usage=False)
    assert "['device_map', 'low_gpu_mem_usage'] have no effect here" in caplog.text


def test_the_search_calibrates_on_intels_defaults() -> None:
    auto = AutoScheme(avg_bits=3, options="W2A16,W4A16")
    assert auto.calibration_shape(moe=False) == (16, 256)
    assert auto.calibration_shape(moe=True) == (16, 128)
    assert AutoScheme(avg_bits=3, options="W2A16,W4A16", nsamples=4, seqlen=64).calibration_shape(True) == (
        4,
        64,
    )
