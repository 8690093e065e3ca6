"""Shared fixtures: tiny random transformers models built from configs in milliseconds."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

TINY_LLAMA = {
    "hidden_size": 96,  # 96 inputs at group 64: two groups, the last one partial
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "vocab_size": 128,
    "max_position_embeddings": 256,
    "tie_word_embeddings": True,
}


def build_model(config, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A seeded random model of ``config``, in eval mode."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


@pytest.fixture
def tiny_llama():
    """Llama with tied embeddings, 2 blocks, 96-wide (partial groups at group 64)."""
    return build_model(LlamaConfig(**TINY_LLAMA))


@pytest.fixture
def tiny_llama_bf16():
    """The same llama in bfloat16, as checkpoints are usually stored."""
    return build_model(LlamaConfig(**TINY_LLAMA), dtype=torch.bfloat16)


@pytest.fixture
def tiny_qwen3():
    """Qwen3 (q/k norms), untied embeddings."""
    config = Qwen3Config(**{**TINY_LLAMA, "tie_word_embeddings": False})
    return build_model(config)


@pytest.fixture
def tiny_tokenizer():
    """A word-level tokenizer over 128 ids (lowercase words and punctuation), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = [
        "<unk>",
        "<s>",
        "</s>",
        *["the", "of", "and", "to", "in", "a", "is", "was", "for", "on", "as", "with", "by", "at"],
    ]
    words += [f"w{i}" for i in range(TINY_LLAMA["vocab_size"] - len(words))]
    vocab = {word: i for i, word in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


@pytest.fixture
def make_llama():
    """Build a tiny llama with some config fields changed: ``make_llama(intermediate_size=144)``."""
    return lambda **overrides: build_model(LlamaConfig(**{**TINY_LLAMA, **overrides}))


TINY_QWEN3_MOE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 64,  # every expert Linear is 64 x 64: all of them quantize
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 128,
    "max_position_embeddings": 256,
}


@pytest.fixture
def tiny_qwen3_moe():
    """Qwen3-MoE, 2 blocks of 4 experts (top-2), already unfused into per-expert Linear layers."""
    from transformers import Qwen3MoeConfig

    from autoround.modeling.moe import unfuse_experts

    model = build_model(Qwen3MoeConfig(**TINY_QWEN3_MOE))
    unfuse_experts(model)
    return model
