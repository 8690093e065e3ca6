"""Fused MoE experts -> per-expert Linear layers: same logits, checkpoint names, layer plan."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    GptOssConfig,
    MixtralConfig,
    OlmoeConfig,
    Qwen2MoeConfig,
    Qwen3MoeConfig,
)

import autoround
from autoround.layer_plan import resolve
from autoround.modeling.moe import UnfusedExperts, checkpoint_names, is_fused_experts, unfuse_experts

COMMON = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
}
ROUTED = {"num_experts_per_tok": 2}

CONFIGS = {
    "qwen3_moe": lambda: Qwen3MoeConfig(
        **COMMON, **ROUTED, head_dim=16, moe_intermediate_size=64, num_experts=4
    ),
    "mixtral": lambda: MixtralConfig(**COMMON, **ROUTED, head_dim=16, num_local_experts=4),
    "qwen2_moe": lambda: Qwen2MoeConfig(
        **COMMON, **ROUTED, moe_intermediate_size=64, shared_expert_intermediate_size=64, num_experts=4
    ),
    "olmoe": lambda: OlmoeConfig(**COMMON, **ROUTED, num_experts=4, pad_token_id=0, eos_token_id=1),
    # transposed (E, in, out) weights, biases, interleaved gate/up, clamped custom gate, other arg names
    "gpt_oss": lambda: GptOssConfig(**COMMON, **ROUTED, head_dim=16, num_local_experts=4),
}
NAMES = {
    "qwen3_moe": ("gate_proj", "up_proj", "down_proj"),
    "mixtral": ("w1", "w3", "w2"),  # Mixtral's original checkpoints: w1 gate, w3 up, w2 down
    "qwen2_moe": ("gate_proj", "up_proj", "down_proj"),
    "olmoe": ("gate_proj", "up_proj", "down_proj"),
    "gpt_oss": ("gate_proj", "up_proj", "down_proj"),  # checkpoint is fused: the default names
}


def _build(arch: str, dtype: torch.dtype = torch.float32, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    kwargs.setdefault("experts_implementation", "eager")  # the fused reference runs the same loop
    model = AutoModelForCausalLM.from_config(CONFIGS[arch](), dtype=dtype, **kwargs)
    for param in model.parameters():  # some inits leave biases / routers at zero: make them count
        with torch.no_grad():
            param.add_(torch.randn_like(param) * 0.02)
    return model.eval()


def _logits(model: nn.Module) -> torch.Tensor:
    ids = torch.randint(0, COMMON["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_logits_identical_and_linear_names(arch):
    model = _build(arch)
    before = _logits(model)
    routers = [m for m in model.modules() if type(m).__name__.endswith("Router")]
    fused = [m for m in model.modules() if is_fused_experts(m)]
    assert len(fused) == COMMON["num_hidden_layers"]

    assert unfuse_experts(model) == COMMON["num_hidden_layers"]

    after = _logits(model)
    if arch == "gpt_oss":  # x @ W + b (fused) vs addmm (Linear) round differently
        torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    else:
        assert torch.equal(after, before)
    assert not any(is_fused_experts(m) for m in model.modules())
    assert all(m.gate_up_proj.numel() == 0 for m in fused)  # fused storage released
    gate, up, down = NAMES[arch]
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for layer in range(COMMON["num_hidden_layers"]):
        for expert in range(4):
            prefix = f"model.layers.{layer}.mlp.experts.{expert}"
            assert {f"{prefix}.{gate}", f"{prefix}.{up}", f"{prefix}.{down}"} <= linears
    assert isinstance(model.get_submodule("model.layers.0.mlp.experts"), UnfusedExperts)
    assert routers and all(any(m is r for m in model.modules()) for r in routers)  # routers kept


def test_idempotent_and_router_untouched():
    model = _build("qwen3_moe")
    router = model.model.layers[0].mlp.gate
    router_weight = router.weight.detach().clone()
    assert unfuse_experts(model) == 2
    assert unfuse_experts(model) == 0
    assert model.model.layers[0].mlp.gate is router
    assert torch.equal(router.weight, router_weight)


def test_expert_shapes_dtype_and_grouped_default():
    model = _build("qwen3_moe", dtype=torch.bfloat16, experts_implementation=None)  # default kernel
    before = _logits(model)
    unfuse_experts(model)
    expert = model.model.layers[1].mlp.experts[3]
    assert expert.gate_proj.weight.shape == (64, 64) and expert.down_proj.weight.shape == (64, 64)
    assert expert.up_proj.weight.dtype == torch.bfloat16 and expert.up_proj.bias is None
    torch.testing.assert_close(_logits(model), before, rtol=0.02, atol=0.02)


def test_unfused_forward_matches_fused_module_directly():
    model = _build("gpt_oss")
    fused = model.model.layers[0].mlp.experts
    hidden = torch.randn(7, COMMON["hidden_size"])
    index = torch.randint(0, 4, (7, 2))
    weights = torch.rand(7, 2)
    with torch.no_grad():
        expected = fused(hidden, router_indices=index, routing_weights=weights)
    unfuse_experts(model)
    unfused = model.model.layers[0].mlp.experts
    with torch.no_grad():
        torch.testing.assert_close(unfused(hidden, router_indices=index, routing_weights=weights), expected)
        torch.testing.assert_close(unfused(hidden, index, weights), expected)
    assert unfused[0].gate_proj.bias is not None


def test_meta_device_allocates_nothing():
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(CONFIGS["qwen3_moe"]())
    assert unfuse_experts(model) == 2
    assert model.model.layers[0].mlp.experts[0].down_proj.weight.device.type == "meta"


def test_layer_plan_quantizes_every_expert_and_keeps_routers():
    model = _build("qwen2_moe")
    unfuse_experts(model)
    plan = resolve(model, autoround.PRESETS["W4A16G32"])
    assert plan.block_names == ("model.layers",)  # the experts are not mistaken for the blocks
    quantized = plan.quantized()
    experts = [n for n in plan.layers if ".mlp.experts." in n]
    assert len(experts) == 2 * 4 * 3 and all(n in quantized for n in experts)
    # the router is a raw weight (TopKRouter), not Linear-like: never in the plan, stays 16-bit
    assert not any(n.endswith("mlp.gate") for n in plan.layers)
    # the shared-expert gate is Linear(hidden, 1): kept in 16 bits for its shape
    decision = plan.layers["model.layers.0.mlp.shared_expert_gate"]
    assert decision.scheme is None and "multiple of 32" in decision.reason


def test_checkpoint_names_from_conversion_mapping():
    assert checkpoint_names(["mixtral"]) == ("w1", "w3", "w2")
    assert checkpoint_names(["qwen3_moe"]) == ("gate_proj", "up_proj", "down_proj")
    assert checkpoint_names(["no_such_model", "phimoe"]) == ("w1", "w3", "w2")
    assert checkpoint_names(["no_such_model"]) == ("gate_proj", "up_proj", "down_proj")


def test_fixture_is_unfused_and_fully_quantized(tiny_qwen3_moe):
    plan = resolve(tiny_qwen3_moe, autoround.PRESETS["W4A16G32"])
    experts = [n for n in plan.layers if ".mlp.experts." in n]
    assert experts and all(plan.layers[n].scheme is not None for n in experts)
    assert not any(is_fused_experts(m) for m in tiny_qwen3_moe.modules())


@pytest.mark.parametrize("arch", ["mixtral", "qwen3_moe"])
def test_saved_checkpoint_has_original_names_and_reloads_fused(arch, tmp_path):
    from safetensors import safe_open

    model = _build(arch)
    before = _logits(model)
    unfuse_experts(model)
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    gate, up, down = NAMES[arch]
    moe = "block_sparse_moe" if arch == "mixtral" else "mlp"  # transformers renames mixtral's back
    for name in (gate, up, down):
        assert f"model.layers.1.{moe}.experts.3.{name}.weight" in keys
    # transformers 5 fuses the per-expert checkpoint again on load: same model
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, experts_implementation="eager").eval()
    assert any(is_fused_experts(m) for m in reloaded.modules())
    assert torch.equal(_logits(reloaded), before)
