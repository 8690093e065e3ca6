"""GPU memory of a SignRound run, block by block (issue 25): allocated after each block and the
peak so far, with the iterations replayed from CUDA graphs and without.

    PYTHONPATH=packages/autoround-core/src python3 bench/signround_gpu_memory.py [--nsamples 32]
"""

from __future__ import annotations

import argparse
import os

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from autoround.algorithms import SignRoundSettings
from autoround.algorithms.signround_blocks import quantize_signround
from autoround.layer_plan import resolve
from autoround.schemes import PRESETS

SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)  # fmt: skip
GIB = 2**30


def one_run(graphs: str, nsamples: int, iters: int, layers: int) -> None:
    os.environ["AUTOROUND_CUDA_GRAPHS"] = graphs
    torch.manual_seed(0)
    config = LlamaConfig(**{**SMOLLM2, "num_hidden_layers": layers})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).cuda().eval()
    ids = torch.randint(0, 49152, (nsamples, 2048))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated() / GIB
    trail = []

    def done(index, quants, report) -> None:
        trail.append(
            f"{torch.cuda.memory_allocated() / GIB:.2f}/{torch.cuda.max_memory_allocated() / GIB:.2f}"
        )

    settings = SignRoundSettings(iters=iters, batch_size=8)
    quantize_signround(model, resolve(model, PRESETS["W4A16"]), ids, settings, "cuda", False, done)
    print(f"graphs={graphs}: start {start:.2f} GiB; allocated/peak after each block: {' '.join(trail)}")
    print(
        f"graphs={graphs}: end {torch.cuda.memory_allocated() / GIB:.2f}, peak {torch.cuda.max_memory_allocated() / GIB:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    for graphs in ("0", "1"):
        one_run(graphs, args.nsamples, args.iters, args.layers)


if __name__ == "__main__":
    main()
