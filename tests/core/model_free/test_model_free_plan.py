"""Which tensors a checkpoint's plan quantizes, from names, shapes and config.json alone: the
model-based rule (decoder-block Linear layers) read off the tensors, and what it refuses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import transformers

from autoround.errors import SchemeError, UnsupportedLayerError
from autoround.model_free.plan import CONV1D_MODEL_TYPES, find_blocks, plan_checkpoint
from autoround.model_free.source import Shard, TensorInfo
from autoround.schemes import parse_scheme

W4 = parse_scheme("W4A16")
PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.down_proj")


def shard(*tensors: tuple[str, tuple[int, ...]], dtype: str = "BF16") -> list[Shard]:
    return [Shard(Path("model.safetensors"), tuple(TensorInfo(n, s, dtype) for n, s in tensors))]


def decoder(blocks: int = 2, lm_head: bool = True) -> list[tuple[str, tuple]]:
    """A llama-like checkpoint's tensors: embedding, ``blocks`` blocks, final norm, lm_head."""
    tensors: list[tuple[str, tuple]] = [("model.embed_tokens.weight", (128, 64))]
    tensors.append(("model.norm.weight", (64,)))
    for i in range(blocks):
        tensors += [(f"model.layers.{i}.{p}.weight", (64, 64)) for p in PROJ]
        tensors += [(f"model.layers.{i}.input_layernorm.weight", (64,))]
        tensors += [(f"model.layers.{i}.mlp.down_proj.bias", (64,))]
    return tensors + ([("lm_head.weight", (128, 64))] if lm_head else [])


def test_decoder_block_linear_weights_are_quantized_and_nothing_else() -> None:
    planned = plan_checkpoint(shard(*decoder()), {"tie_word_embeddings": False}, W4)
    assert planned.layer_plan.block_names == ("model.layers",)
    assert sorted(planned.weights) == sorted(f"model.layers.{i}.{p}.weight" for i in range(2) for p in PROJ)
    assert planned.layer_plan.layers["lm_head"].scheme is None  # outside the blocks: 16-bit unless named
    assert "model.embed_tokens" not in planned.layer_plan.layers
    assert planned.fp16_biases == {"model.layers.0.mlp.down_proj.bias", "model.layers.1.mlp.down_proj.bias"}
    assert planned.dropped == frozenset() and planned.dense_block_matrices == ()


def test_lm_head_is_quantized_when_named_and_stored_on_its_own() -> None:
    tensors = shard(*decoder())
    for kwargs in ({"quant_lm_head": True}, {"layer_config": {"lm_head": "W8A16"}}):
        planned = plan_checkpoint(tensors, {"tie_word_embeddings": False}, W4, **kwargs)
        assert "lm_head.weight" in planned.weights


@pytest.mark.parametrize(
    ("config", "lm_head"), [({"tie_word_embeddings": True}, True), ({}, False), ({"text_config": {}}, False)]
)
def test_a_tied_lm_head_is_not_quantized_and_its_second_copy_is_dropped(config, lm_head) -> None:
    tensors = shard(*decoder(lm_head=lm_head))
    planned = plan_checkpoint(tensors, config, W4)
    assert planned.dropped == ({"lm_head.weight"} if lm_head else set())
    with pytest.raises(UnsupportedLayerError, match="lm_head is tied to the input embedding"):
        plan_checkpoint(tensors, config, W4, quant_lm_head=True)
    with pytest.raises(UnsupportedLayerError, match="lm_head is tied"):
        plan_checkpoint(tensors, config, W4, layer_config={".*head": "W8A16"})


def test_the_longest_numbered_list_whose_entries_all_hold_linear_layers_is_the_block_list() -> None:
    names = [n for n, _ in decoder(3)] + [f"model.vision.layers.{i}.fc.weight" for i in range(2)]
    linear = [n.removesuffix(".weight") for n in names if "proj.weight" in n or ".fc." in n]
    assert find_blocks(names, linear) == ("model.layers",)
    names += [f"model.norms.{i}.weight" for i in range(5)]  # longer, but holds no Linear layer
    assert find_blocks(names, linear) == ("model.layers",)
    with pytest.raises(UnsupportedLayerError, match=r"no decoder block list.*lists seen: \['model.norms'\]"):
        find_blocks([f"model.norms.{i}.weight" for i in range(5)], [])


def test_moe_experts_are_linear_layers_and_routers_stay_dense() -> None:
    tensors = [("model.embed_tokens.weight", (128, 64))]
    for i in range(2):
        tensors.append((f"model.layers.{i}.self_attn.q_proj.weight", (64, 64)))
        tensors.append((f"model.layers.{i}.mlp.gate.weight", (32, 64)))  # router: one row per expert
        tensors.append((f"model.layers.{i}.mlp.shared_expert_gate.weight", (1, 64)))  # a Linear
        for e in range(32):
            experts = f"model.layers.{i}.mlp.experts.{e}"
            tensors += [(f"{experts}.up_proj.weight", (64, 64)), (f"{experts}.down_proj.weight", (64, 64))]
    planned = plan_checkpoint(shard(*tensors), {}, W4)
    assert planned.layer_plan.block_names == ("model.layers",)  # 32 experts do not make a block list
    assert planned.dense_block_matrices == ("model.layers.0.mlp.gate", "model.layers.1.mlp.gate")
    assert "model.layers.0.mlp.gate" not in planned.layer_plan.layers
    assert planned.layer_plan.layers["model.layers.0.mlp.shared_expert_gate"].scheme is None  # 1 row: 16-bit
    assert "model.layers.1.mlp.experts.31.down_proj.weight" in planned.weights


def test_embeddings_are_not_linear_layers_but_embed_out_is() -> None:
    extra = [("transformer.wte.weight", (128, 64)), ("embed_out.weight", (128, 64))]
    tensors = [*decoder(lm_head=False), *extra]
    planned = plan_checkpoint(
        shard(*tensors), {"tie_word_embeddings": False}, W4, layer_config={"e": "W8A16"}
    )
    assert "embed_out.weight" in planned.weights  # a pattern reaches it, as it reaches a Linear
    assert not {"model.embed_tokens", "transformer.wte"} & set(planned.layer_plan.layers)


def test_ignore_layers_follow_intels_rules_and_win_over_layer_config() -> None:
    tensors = shard(*decoder(11))
    planned = plan_checkpoint(
        tensors, {}, W4, ignore_layers="model.layers.1, mlp.down_proj", layer_config={"down_proj": "W8A16"}
    )
    ignored = {n for n, d in planned.layer_plan.layers.items() if d.reason == "ignore_layers"}
    assert {n for n in ignored if n.startswith("model.layers.1.")} == {f"model.layers.1.{p}" for p in PROJ}
    assert "model.layers.10.self_attn.q_proj" not in ignored  # "layers.1" is not "layers.10"
    assert all(f"model.layers.{i}.mlp.down_proj" in ignored for i in range(11))
    assert planned.layer_plan.layers["lm_head"].reason != "ignore_layers"


def test_floating_2d_weights_only_and_narrow_layers_stay_in_16_bits() -> None:
    tensors = [(n, (64, 48) if "o_proj" in n else s) for n, s in decoder()]
    infos = [TensorInfo(n, s, "I8" if "down_proj.weight" in n else "BF16") for n, s in tensors]
    planned = plan_checkpoint([Shard(Path("model.safetensors"), tuple(infos))], {}, W4)
    layers = planned.layer_plan.layers
    assert layers["model.layers.0.self_attn.o_proj"].reason.startswith("out x in = (64, 48)")
    assert "model.layers.0.mlp.down_proj" not in layers  # not a floating-point weight


def test_a_plan_that_quantizes_nothing_or_splits_a_fused_weight_is_refused() -> None:
    tensors = shard(*decoder())
    with pytest.raises(SchemeError, match="quantizes no layer"):
        plan_checkpoint(tensors, {}, W4, layer_config={"proj": {"bits": 16}})
    with pytest.raises(SchemeError, match=r"qkv_proj is one fused weight in vLLM but its parts differ"):
        plan_checkpoint(tensors, {}, W4, layer_config={"q_proj": {"bits": 8}})


def test_fused_experts_and_conv1d_models_are_refused() -> None:
    fused = [*decoder(), ("model.layers.0.mlp.experts.gate_up_proj", (4, 128, 64))]
    with pytest.raises(UnsupportedLayerError, match=r"fused \(model.layers.0.mlp.experts.gate_up_proj"):
        plan_checkpoint(shard(*fused), {}, W4)
    with pytest.raises(UnsupportedLayerError, match="model_type 'gpt2' stores its Linear layers as"):
        plan_checkpoint(shard(*decoder()), {"model_type": "gpt2"}, W4)


def test_every_transformers_model_built_on_conv1d_is_refused() -> None:
    """The list is derived from transformers' own sources: a model whose modeling file builds a
    ``Conv1D`` must have its configuration's model_type listed."""
    models = Path(transformers.__file__).parent / "models"
    found = set()
    for modeling in models.glob("*/modeling_*.py"):
        if "Conv1D(" in modeling.read_text(encoding="utf-8"):
            for configuration in modeling.parent.glob("configuration_*.py"):
                found.update(re.findall(r'model_type = "([^"]+)"', configuration.read_text(encoding="utf-8")))
    assert "gpt2" in found
    assert found <= CONV1D_MODEL_TYPES
