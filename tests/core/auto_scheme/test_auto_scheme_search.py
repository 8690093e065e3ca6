"""The search: the plan meets the budget (and no upgrade it left out would fit), fused layers
share a scheme, pins are kept, and bits go where the measured error is largest."""

from __future__ import annotations

import pytest
import torch

from autoround import AutoScheme, parse_scheme
from autoround.auto_scheme import layer_bits, search, search_space
from autoround.layer_plan import resolve

OPTIONS = "W2A16G32,W4A16G32,W8A16G32"
SCHEMES = {name: parse_scheme(name) for name in OPTIONS.split(",")}


def calibration(rows: int = 4, seqlen: int = 32) -> torch.Tensor:
    return torch.randint(0, 128, (rows, seqlen), generator=torch.Generator().manual_seed(0))


def searched(model, auto, **kwargs):
    space = search_space(model, auto, **kwargs)
    return space, search(model, space, calibration(), progress=False)


def plan_bits(model, chosen: dict[str, str], fixed_bits: int = 0) -> int:
    """The plan's bits, counted again layer by layer from the chosen option names."""
    shapes = {n: (m.out_features, m.in_features) for n, m in model.named_modules() if n in chosen}
    return fixed_bits + sum(layer_bits(SCHEMES[chosen[n]], *shapes[n]) for n in chosen)


@pytest.mark.parametrize("avg_bits", [2.8, 3.0, 4.5, 6.0, 8.5])
def test_the_plan_meets_the_budget_and_no_left_out_upgrade_would_fit(tiny_llama, avg_bits) -> None:
    space, plan = searched(tiny_llama, AutoScheme(avg_bits, OPTIONS))
    bits = plan_bits(tiny_llama, plan.chosen)
    assert bits == plan.bits <= int(space.weights * avg_bits)
    assert plan.avg_bits <= avg_bits
    left = space.budget - bits
    for unit in space.units:
        now = space.auto.names.index(plan.chosen[unit.layers[0]])
        assert all(cost - unit.costs[now] > left for cost in unit.costs if cost > unit.costs[now])


def test_fused_layers_get_one_scheme(tiny_llama, tiny_qwen3_moe) -> None:
    for model in (tiny_llama, tiny_qwen3_moe):
        space, plan = searched(model, AutoScheme(3.5, OPTIONS))
        for unit in space.units:
            assert len({plan.chosen[n] for n in unit.layers}) == 1
    _, moe_plan = searched(tiny_qwen3_moe, AutoScheme(3.5, OPTIONS))
    for block in (0, 1):
        experts = {
            s for n, s in moe_plan.chosen.items() if n.startswith(f"model.layers.{block}.mlp.experts.")
        }
        assert len(experts) == 1


def test_pins_are_kept_and_the_plan_resolves_to_the_chosen_schemes(tiny_llama) -> None:
    pins = {"down_proj": "W8A16"}
    space, plan = searched(tiny_llama, AutoScheme(4.0, OPTIONS), layer_config=pins)
    assert plan.layer_config["down_proj"] == "W8A16"
    resolved = resolve(tiny_llama, plan.default, plan.layer_config)
    for name, decision in resolved.layers.items():
        if name.endswith("down_proj"):
            assert decision.scheme == parse_scheme("W8A16")
        elif name != "lm_head":
            assert decision.scheme == SCHEMES[plan.chosen[name]]
    assert plan.bits == plan_bits(tiny_llama, plan.chosen, space.fixed_bits)


@pytest.mark.parametrize("method", ["default", "block"])
def test_a_layer_whose_error_dominates_gets_more_bits(tiny_llama, method: str) -> None:
    # Unscaled, both down_proj get 2 bits at this budget. Scaled 30x, the first block's output
    # error is 30x (900x squared): it gets more bits than its twin in the second block. (The
    # last block's scale would be divided out again by the final norm before the loss.)
    with torch.no_grad():
        tiny_llama.model.layers[0].mlp.down_proj.weight.mul_(30)
    _, plan = searched(tiny_llama, AutoScheme(3.0, OPTIONS, method=method))
    bits = {n: SCHEMES[s].bits for n, s in plan.chosen.items()}
    assert bits["model.layers.0.mlp.down_proj"] > bits["model.layers.1.mlp.down_proj"]


def test_the_default_is_the_option_holding_the_most_weights(tiny_llama) -> None:
    _, plan = searched(tiny_llama, AutoScheme(2.8, OPTIONS))
    weights: dict[str, int] = {}
    for name, option in plan.chosen.items():
        weights[option] = weights.get(option, 0) + tiny_llama.get_submodule(name).weight.numel()
    assert plan.default == SCHEMES[max(weights, key=weights.__getitem__)]


def test_a_quantized_lm_head_gets_the_most_bits_that_fit(tiny_qwen3) -> None:
    _, plan = searched(tiny_qwen3, AutoScheme(5.0, OPTIONS), quant_lm_head=True)
    assert plan.chosen["lm_head"] == "W8A16G32"
    _, tight = searched(tiny_qwen3, AutoScheme(2.8, OPTIONS), quant_lm_head=True)
    assert tight.chosen["lm_head"] != "W8A16G32"
