"""Tiny models and a byte-level BPE tokenizer for the GGUF tests, built offline in milliseconds.

The K-quants need rows that are a whole number of 256-weight super-blocks, so the GGUF llama is
256 wide (512 in the MLP); :data:`NARROW` (288 wide: 32-weight blocks only) exercises llama.cpp's
fallback. The tokenizer is byte-level BPE (what the GGUF writer writes: ``tokenizer.ggml.model
gpt2``), trained on one sentence.
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

GGUF_LLAMA = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "vocab_size": 320,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}
#: 288 inputs: no whole 256-weight super-block, so every K-quant falls back.
NARROW = {**GGUF_LLAMA, "hidden_size": 288, "intermediate_size": 320, "head_dim": 72}
CONFIGS = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}


def gguf_model(arch: str = "llama", seed: int = 0, **overrides) -> torch.nn.Module:
    """A seeded random model of ``arch`` with weights ~ N(0, 0.08) (logits of a few units)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        CONFIGS[arch](**{**GGUF_LLAMA, **overrides}), dtype=torch.float32
    )
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0, 0.08)
    return model.eval()


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of 300 tokens (256 bytes, 2 specials, merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<s>", "</s>"],
        show_progress=False,
    )
    backend.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")
