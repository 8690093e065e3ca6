"""Build and save a tiny, seeded, random Llama checkpoint (bf16) with a tiny tokenizer.

Helper for the scripts in scripts/intel/ (needs torch, transformers, tokenizers only; works in
the Intel venv and in the project venv).

    python scripts/intel/tiny_llama.py OUT_DIR [--hidden 96 --intermediate 192 --layers 2
        --heads 3 --kv-heads 1 --vocab 320 --seed 0 --untied]
"""

from __future__ import annotations

import argparse
import os

_CORPUS = (
    "The capital of France is Paris. The quick brown fox jumps over the lazy dog. "
    "Quantization maps weights to a small grid of integers with a shared scale. "
    "0123456789 hello world, tiny llama, round to nearest."
)


def build_tokenizer(vocab_size: int):
    """Byte-level BPE trained on a fixed sentence, padded with merges up to ``vocab_size``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def build_tiny_llama(
    out_dir: str,
    hidden: int = 96,
    intermediate: int = 192,
    layers: int = 2,
    heads: int = 3,
    kv_heads: int = 1,
    vocab: int = 320,
    seed: int = 0,
    tie: bool = True,
    std: float = 0.05,
) -> str:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(vocab)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=std,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--intermediate", type=int, default=192)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--kv-heads", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--untied", action="store_true")
    a = ap.parse_args()
    build_tiny_llama(
        a.out, a.hidden, a.intermediate, a.layers, a.heads, a.kv_heads, a.vocab, a.seed, tie=not a.untied
    )
    print(a.out)


if __name__ == "__main__":
    main()
