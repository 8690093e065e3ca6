"""Tiny random transformers models and a tokenizer, built from configs in milliseconds.

The fixtures of ``tests/conftest.py`` wrap these; tests that build models outside a fixture
(module-scoped setups) import them from here.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

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


def build_tokenizer():
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
