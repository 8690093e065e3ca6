"""A model loaded block by block holds, once each block is read, exactly what from_pretrained
gives (values, dtypes, ties, buffers, configs); released blocks go back to meta; a checkpoint
whose tensors are not the model's is named, not loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_models import TINY_LLAMA, TINY_QWEN3_MOE, build_model
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3MoeConfig

from autoround.model_sources.blockwise import (
    checkpoint_problem,
    load_blockwise,
    materialize,
    resident_parts,
    source_of,
)
from autoround.modeling import unfuse_experts
from autoround.resume import weights_digest


@pytest.fixture(params=[torch.float32, torch.bfloat16], ids=["fp32-file", "bf16-file"])
def llama_dir(request, tmp_path) -> Path:
    build_model(LlamaConfig(**{**TINY_LLAMA, "num_hidden_layers": 3}), dtype=request.param).save_pretrained(
        tmp_path / "llama"
    )
    return tmp_path / "llama"


def test_loaded_block_by_block_it_equals_from_pretrained(llama_dir) -> None:
    reference = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    model = load_blockwise(llama_dir, torch.float32)
    source = source_of(model)
    assert source is not None and len(source) == 3
    assert all(p.is_meta for p in model.model.layers.parameters())
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert weights_digest(model) == weights_digest(reference), "the resume fingerprint is the same"
    materialize(model)
    assert source_of(model) is None
    expected, got = reference.state_dict(), model.state_dict()
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    for (name, buffer), (_, mine) in zip(reference.named_buffers(), model.named_buffers(), strict=True):
        assert torch.equal(mine, buffer), name
    assert model.config.to_json_string() == reference.config.to_json_string()
    assert model.generation_config == reference.generation_config


def test_a_block_is_in_memory_only_while_its_turn_lasts(llama_dir) -> None:
    model = load_blockwise(llama_dir, None)
    source = source_of(model)
    assert source is not None
    seen = []
    for _ in resident_parts(model):
        seen.append([i for i, block in enumerate(model.model.layers) if not block.mlp.up_proj.weight.is_meta])
    assert seen == [[], [0], [1], [2]]
    assert model.model.embed_tokens.weight.dtype == model.config.dtype


def test_fused_moe_experts_are_read_as_the_per_expert_tensors_of_the_files(tmp_path) -> None:
    path = tmp_path / "moe"
    build_model(Qwen3MoeConfig(**TINY_QWEN3_MOE)).save_pretrained(path)
    assert checkpoint_problem(path) is None
    model = load_blockwise(path, torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    unfuse_experts(reference)  # the unfused forward sums experts in another order than the fused one
    materialize(model)
    assert list(model.state_dict()) == list(reference.state_dict())
    ids = torch.arange(16).unsqueeze(0)
    assert torch.equal(model(ids).logits, reference(ids).logits)


def test_a_checkpoint_whose_tensors_are_not_the_models_is_named(llama_dir) -> None:
    from safetensors.torch import load_file, save_file

    file = llama_dir / "model.safetensors"
    tensors = load_file(file)
    tensors["model.layers.0.mlp.fused.weight"] = tensors.pop("model.layers.0.mlp.up_proj.weight")
    save_file(tensors, file, metadata={"format": "pt"})
    assert checkpoint_problem(llama_dir) == (
        "the model's parameter model.layers.0.mlp.up_proj.weight is not a tensor of the checkpoint "
        "(transformers converts its tensors on loading)"
    )
    with pytest.raises(ValueError, match="cannot be loaded block by block: the model's parameter"):
        load_blockwise(llama_dir, None)


def test_not_a_local_directory_is_named(tmp_path) -> None:
    assert (
        checkpoint_problem("some-org/some-model") == "some-org/some-model is not a local checkpoint directory"
    )
