"""End-to-end ``generate()`` tokens/s through autoround-hf on the GPU (issue 11).

    PYTHONPATH=packages/autoround-core/src:packages/autoround-hf/src python3 bench/generate_gpu.py

Random-weight models of SmolLM2-135M's and a Llama-1B's shapes (decode speed does not depend on
the weight values; every run generates exactly ``--tokens`` tokens), bf16 dense vs our W4A16 g128
and W2A16G64 RTN checkpoints loaded with ``from_pretrained(..., quantization_config=AutoRoundConfig())``
on the Triton backend; greedy, batch 1 and 16, timed after two warm-up generates (which also run
the kernels' per-shape autotuning and, with the static cache, compilation and CUDA graph capture).

``--caches dynamic,static``: ``dynamic`` is eager ``generate()``; ``static`` is transformers' own
``cache_implementation="static"``, under which it compiles the decode step (CUDA graphs) for bf16
and for our layers alike. The graph count and graph breaks of the compiled rows are printed.
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


def tokens_per_s(model, batch: int, prompt: int, tokens: int, cache: str) -> float:
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt), device="cuda")
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
    if cache == "static":
        kwargs["cache_implementation"] = "static"
    for _ in range(2):  # warm-up: compilation, CUDA graph capture, autotuning, allocator
        model.generate(ids, **kwargs)
    torch.cuda.synchronize()
    start = time.perf_counter()
    model.generate(ids, **kwargs)
    torch.cuda.synchronize()
    return batch * tokens / (time.perf_counter() - start)


def gpu_ms_per_token(model, prompt: int, tokens: int, cache: str) -> float:
    """Kernel time per generated token at batch 1 (the profiler's CUDA time of one generate):
    what the token would cost if the host never made the GPU wait."""
    ids = torch.randint(0, model.config.vocab_size, (1, prompt), device="cuda")
    kwargs = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
    if cache == "static":
        kwargs["cache_implementation"] = "static"
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        model.generate(ids, **kwargs)
        torch.cuda.synchronize()
    kernel_us = sum(e.self_device_time_total for e in prof.key_averages())
    return kernel_us / 1000 / tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated, from {list(SHAPES)}")
    parser.add_argument("--schemes", default=",".join(SCHEMES), help=f"comma-separated, from {list(SCHEMES)}")
    parser.add_argument("--caches", default="dynamic,static", help="comma-separated, from dynamic,static")
    args = parser.parse_args()
    for cache in args.caches.split(","):
        run_rows(args, cache)


def compile_counts() -> str:
    from torch._dynamo.utils import counters

    return (
        f"graphs {counters['stats']['unique_graphs']}, graph breaks {sum(counters['graph_break'].values())}"
    )


def run_rows(args: argparse.Namespace, cache: str) -> None:
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, cache {cache}")
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
        torch._dynamo.reset()
        base = [tokens_per_s(dense, b, args.prompt, args.tokens, cache) for b in (1, 16)]
        counts = f" ({compile_counts()})" if cache == "static" else ""
        counts += f" GPU {gpu_ms_per_token(dense, args.prompt, args.tokens, cache):.2f} ms/token at b1"
        print(f"| {name} | bf16 | {base[0]:.0f} | {base[1]:.0f} | 1.00x | 1.00x |{counts}", flush=True)
        for scheme in args.schemes.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                qm = autoround.quantize(dense, scheme, device="cuda", progress=False)
                autoround.save(qm, f"{tmp}/ckpt")
                quant = AutoModelForCausalLM.from_pretrained(
                    f"{tmp}/ckpt", quantization_config=AutoRoundConfig(backend="triton"),
                    dtype=torch.bfloat16, device_map="cuda",
                ).eval()  # fmt: skip
                torch._dynamo.reset()
                got = [tokens_per_s(quant, b, args.prompt, args.tokens, cache) for b in (1, 16)]
                gpu = f" GPU {gpu_ms_per_token(quant, args.prompt, args.tokens, cache):.2f} ms/token at b1"
                print(
                    f"| {name} | {scheme} | {got[0]:.0f} | {got[1]:.0f} | {got[0] / base[0]:.2f}x | "
                    f"{got[1] / base[1]:.2f}x |"
                    + (f" ({compile_counts()})" if cache == "static" else "")
                    + gpu,
                    flush=True,
                )
                del quant
            dense = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).cuda().eval()


if __name__ == "__main__":
    main()
