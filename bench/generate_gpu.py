"""End-to-end ``generate()`` tokens/s through autoround-hf on the GPU (issue 11).

    PYTHONPATH=packages/autoround-core/src:packages/autoround-hf/src python3 bench/generate_gpu.py

Random-weight models of SmolLM2-135M's and a Llama-1B's shapes (decode speed does not depend on
the weight values; every run generates exactly ``--tokens`` tokens), bf16 dense vs our W4A16 g128
and W2A16G64 RTN checkpoints loaded with ``from_pretrained(..., quantization_config=AutoRoundConfig())``
on the Triton backend; greedy, batch 1 and 16, timed after one warm-up generate (which also runs
the kernels' per-shape autotuning).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import autoround
from autoround_hf import AutoRoundConfig

SHAPES = {
    "SmolLM2-135M": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "Llama-1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
}  # fmt: skip
SCHEMES = ("W4A16", "W2A16G64")


def tokens_per_s(model, batch: int, prompt: int, tokens: int) -> float:
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt), device="cuda")
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
    model.generate(ids, **kwargs)  # warm-up: compilation, autotuning, allocator
    torch.cuda.synchronize()
    start = time.perf_counter()
    model.generate(ids, **kwargs)
    torch.cuda.synchronize()
    return batch * tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated, from {list(SHAPES)}")
    parser.add_argument("--schemes", default=",".join(SCHEMES), help=f"comma-separated, from {list(SCHEMES)}")
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| model | weights | batch 1 tok/s | batch 16 tok/s | vs bf16 (b1) | vs bf16 (b16) |")
    print("|---|---|---|---|---|---|")
    for name, shape in ((m, SHAPES[m]) for m in args.models.split(",")):
        torch.manual_seed(0)
        config = LlamaConfig(
            **shape,
            max_position_embeddings=4096,
            head_dim=shape["hidden_size"] // shape["num_attention_heads"],
        )
        dense = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).cuda().eval()
        base = [tokens_per_s(dense, b, args.prompt, args.tokens) for b in (1, 16)]
        print(f"| {name} | bf16 | {base[0]:.0f} | {base[1]:.0f} | 1.00x | 1.00x |", flush=True)
        for scheme in args.schemes.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                qm = autoround.quantize(dense, scheme, device="cuda", progress=False)
                autoround.save(qm, f"{tmp}/ckpt")
                quant = AutoModelForCausalLM.from_pretrained(
                    f"{tmp}/ckpt", quantization_config=AutoRoundConfig(backend="triton"),
                    dtype=torch.bfloat16, device_map="cuda",
                ).eval()  # fmt: skip
                got = [tokens_per_s(quant, b, args.prompt, args.tokens) for b in (1, 16)]
                print(
                    f"| {name} | {scheme} | {got[0]:.0f} | {got[1]:.0f} | {got[0] / base[0]:.2f}x | "
                    f"{got[1] / base[1]:.2f}x |",
                    flush=True,
                )
                del quant
            dense = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).cuda().eval()


if __name__ == "__main__":
    main()
