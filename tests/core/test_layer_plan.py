"""Which layers get which scheme: defaults, layer_config by exact name / regex / substring."""

from __future__ import annotations

import logging

import pytest

from autoround.errors import SchemeError
from autoround.layer_plan import resolve
from autoround.schemes import PRESETS

W4 = PRESETS["W4A16"]


def test_linear_layers_in_blocks_get_the_default_and_lm_head_stays_16_bit(tiny_llama) -> None:
    plan = resolve(tiny_llama, W4)
    assert plan.block_names == ("model.layers",)
    quantized = plan.quantized()
    assert len(quantized) == 2 * 7 and all(s == W4 for s in quantized.values())
    assert plan.layers["lm_head"].scheme is None
    assert "outside the decoder blocks" in plan.layers["lm_head"].reason


def test_quant_lm_head_quantizes_it(tiny_llama) -> None:
    assert resolve(tiny_llama, W4, quant_lm_head=True).layers["lm_head"].scheme == W4


def test_exact_name_wins_over_patterns(tiny_llama) -> None:
    config = {"mlp": {"bits": 8}, "model.layers.0.mlp.down_proj": "W2A16"}
    plan = resolve(tiny_llama, W4, config)
    assert plan.layers["model.layers.0.mlp.down_proj"].scheme == PRESETS["W2A16"]
    assert plan.layers["model.layers.1.mlp.down_proj"].scheme == W4.replace(bits=8)
    assert plan.layers["model.layers.0.self_attn.q_proj"].scheme == W4


def test_regex_keys_match_partially(tiny_llama) -> None:
    plan = resolve(tiny_llama, W4, {r"layers\.1\..*proj$": {"group_size": 32}})
    assert plan.layers["model.layers.1.self_attn.o_proj"].scheme.group_size == 32
    assert plan.layers["model.layers.0.self_attn.o_proj"].scheme.group_size == 128


def test_sixteen_bits_keeps_a_layer_unquantized(tiny_llama) -> None:
    plan = resolve(tiny_llama, W4, {"model.layers.0.self_attn.k_proj": {"bits": 16}})
    assert plan.layers["model.layers.0.self_attn.k_proj"].scheme is None
    assert "model.layers.0.self_attn.k_proj" not in plan.quantized()


def test_a_pattern_matching_nothing_warns(tiny_llama, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        resolve(tiny_llama, W4, {"no_such_layer": {"bits": 8}})
    assert "'no_such_layer' matches no Linear-like layer" in caplog.text


def test_an_invalid_regex_is_an_error(tiny_llama) -> None:
    with pytest.raises(SchemeError, match=r"not a valid regular expression"):
        resolve(tiny_llama, W4, {"mlp.(gate": {"bits": 8}})


def test_a_bad_value_names_the_key(tiny_llama) -> None:
    with pytest.raises(SchemeError, match=r"layer_config\[.mlp.\].*int5"):
        resolve(tiny_llama, W4, {"mlp": {"bits": 5, "data_type": "int5"}})


def test_non_linear_modules_named_in_layer_config_are_ignored_with_a_warning(tiny_llama, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        plan = resolve(tiny_llama, W4, {"model.norm": {"bits": 8}})
    assert "not a Linear-like layer" in caplog.text
    assert "model.norm" not in plan.layers


def test_a_model_without_blocks_names_what_it_searched() -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"no decoder block list found in Sequential.*block_name"):
        resolve(model, W4)


def test_layers_whose_width_is_not_a_multiple_of_32_stay_16_bit_as_in_intel(make_llama) -> None:
    plan = resolve(make_llama(intermediate_size=144), W4)
    assert plan.layers["model.layers.0.mlp.up_proj"].scheme is None
    assert "not a multiple of 32" in plan.layers["model.layers.0.mlp.down_proj"].reason
    assert plan.layers["model.layers.0.self_attn.q_proj"].scheme == W4
