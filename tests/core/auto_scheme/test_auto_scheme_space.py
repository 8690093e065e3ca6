"""The search space: vLLM's fused layers and shared_layers are one unit each, layer_config pins
keep their scheme and count in the budget, and a budget the options cannot meet on the model is
refused before any work, naming the range."""

from __future__ import annotations

import pytest
from torch import nn

from autoround import AutoScheme, parse_scheme
from autoround.auto_scheme import layer_bits, search_space
from autoround.errors import SchemeError

OPTIONS = "W2A16G32,W4A16G32,W8A16G32"
BLOCK = "model.layers.{}."


def _local_units(space, block: int = 0) -> list[tuple[str, ...]]:
    prefix = BLOCK.format(block)
    return [tuple(n[len(prefix) :] for n in u.layers) for u in space.units if u.layers[0].startswith(prefix)]


def test_llama_units_are_qkv_o_gate_up_and_down(tiny_llama) -> None:
    space = search_space(tiny_llama, AutoScheme(3, OPTIONS))
    assert _local_units(space, 1) == [
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
        ("self_attn.o_proj",),
        ("mlp.gate_proj", "mlp.up_proj"),
        ("mlp.down_proj",),
    ]
    assert len(space.units) == 8 and space.fixed == {} and space.heads == ()


def test_all_experts_of_one_moe_block_are_one_unit(tiny_qwen3_moe) -> None:
    space = search_space(tiny_qwen3_moe, AutoScheme(3, OPTIONS))
    experts = [u for u in space.units if ".experts." in u.layers[0]]
    assert len(experts) == 2  # one per block
    for block, unit in enumerate(experts):
        assert len(unit.layers) == 4 * 3  # 4 experts x gate/up/down
        assert all(n.startswith(f"model.layers.{block}.mlp.experts.") for n in unit.layers)
    assert space.moe


def test_shared_layers_patterns_group_per_block_and_exact_names_across_blocks(tiny_llama) -> None:
    shared = [["o_proj", "down_proj"], ["model.layers.0.mlp.gate_proj", "model.layers.1.mlp.gate_proj"]]
    space = search_space(tiny_llama, AutoScheme(3, OPTIONS, shared_layers=shared))
    layers = sorted(tuple(sorted(u.layers)) for u in space.units)
    assert ("model.layers.0.mlp.down_proj", "model.layers.0.self_attn.o_proj") in layers
    assert ("model.layers.1.mlp.down_proj", "model.layers.1.self_attn.o_proj") in layers
    gate_up = [u for u in layers if "model.layers.0.mlp.gate_proj" in u]
    assert gate_up == [
        tuple(sorted(f"model.layers.{b}.mlp.{p}_proj" for b in (0, 1) for p in ("gate", "up")))
    ]


def test_pins_keep_their_scheme_and_count_in_the_budget(tiny_llama) -> None:
    pins = {"down_proj": "W8A16", "model.layers.0.mlp.up_proj": "BF16"}
    space = search_space(tiny_llama, AutoScheme(6, OPTIONS), layer_config=pins)
    assert space.fixed == {
        "model.layers.0.mlp.up_proj": None,
        "model.layers.0.mlp.down_proj": parse_scheme("W8A16"),
        "model.layers.1.mlp.down_proj": parse_scheme("W8A16"),
    }
    assert all(not set(u.layers) & set(space.fixed) for u in space.units)
    w8 = layer_bits(parse_scheme("W8A16"), 96, 160)
    assert space.fixed_bits == 2 * w8 + 16 * 160 * 96
    linears = [
        m for n, m in tiny_llama.named_modules() if isinstance(m, nn.Linear) and n.startswith("model.")
    ]
    assert space.weights == sum(m.weight.numel() for m in linears)
    assert space.budget == int(space.weights * 6)


def test_layers_kept_in_sixteen_bits_for_their_shape_count_at_sixteen_bits(make_llama) -> None:
    model = make_llama(intermediate_size=144)  # gate/up/down widths not a multiple of 32
    space = search_space(model, AutoScheme(12, OPTIONS))
    assert sorted(n for n, s in space.fixed.items() if s is None) == [
        f"model.layers.{b}.mlp.{p}_proj" for b in (0, 1) for p in ("down", "gate", "up")
    ]
    assert space.fixed_bits == 6 * 16 * 144 * 96


def test_ignoring_scale_and_zero_point_bits_counts_weight_bits_only(tiny_llama) -> None:
    counted = search_space(tiny_llama, AutoScheme(4, OPTIONS))
    bare = search_space(tiny_llama, AutoScheme(4, OPTIONS, ignore_scale_zp_bits=True))
    assert [bare.option_average(i) for i in range(3)] == [2.0, 4.0, 8.0]
    # group 32, 16-bit scale + zero point of the weight's bits per group (Intel's count)
    assert [counted.option_average(i) for i in range(3)] == pytest.approx(
        [2 + 18 / 32, 4 + 20 / 32, 8 + 24 / 32]
    )


@pytest.mark.parametrize("avg_bits", [2.2, 9.0])
def test_a_budget_outside_the_options_range_is_refused_naming_it(tiny_llama, avg_bits) -> None:
    with pytest.raises(
        SchemeError, match=rf"avg_bits={avg_bits} is outside the range \[2\.562, 8\.750\].*W2A16G32=2\.562"
    ):
        search_space(tiny_llama, AutoScheme(avg_bits, OPTIONS))


def test_a_budget_at_an_end_of_the_range_is_snapped_onto_it(tiny_llama) -> None:
    space = search_space(tiny_llama, AutoScheme(2.5624, OPTIONS))
    assert space.budget == sum(u.costs[0] for u in space.units)


def test_pins_move_the_range(tiny_llama) -> None:
    pins = {"mlp": "BF16"}  # every MLP layer kept in 16 bits: the range rises
    with pytest.raises(SchemeError, match=r"outside the range \[1[0-9]\.\d+, 1[0-9]\.\d+\]"):
        search_space(tiny_llama, AutoScheme(8, OPTIONS), layer_config=pins)


def test_a_run_pinning_every_layer_leaves_nothing_to_search(tiny_llama) -> None:
    with pytest.raises(SchemeError, match="no layer to choose a scheme for"):
        search_space(tiny_llama, AutoScheme(4, OPTIONS), layer_config={"proj": "W4A16"})


def test_a_quantized_lm_head_is_a_head_not_a_searched_unit(tiny_qwen3) -> None:
    space = search_space(tiny_qwen3, AutoScheme(4, OPTIONS), quant_lm_head=True)
    assert [u.layers for u in space.heads] == [("lm_head",)]
    assert all("lm_head" not in u.layers for u in space.units)
