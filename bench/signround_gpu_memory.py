"""Where the GPU memory of a SignRound run goes (issue 25): the peak, and what was alive then.

Runs ``autoround.quantize`` (W4A16, the default recipe) on random weights of a SmolLM2-shape
(or Llama-1B-shape) model with PyTorch's allocator history recorded (``torch.cuda.memory._record_memory_history``),
replays the allocation trace to find the peak, and prints the allocations alive at that moment
grouped by the first frame of autoround or transformers code that made them. ``--graphs 0``
runs the iterations eagerly instead of replaying CUDA graphs.

    PYTHONPATH=packages/autoround-core/src python3 bench/signround_gpu_memory.py [--nsamples 32]
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import autoround
from autoround.algorithms import SignRoundSettings

SHAPES = {
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "llama1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=49152),
}  # fmt: skip
GIB = 2**30
OURS = ("autoround", "transformers")


def _origin(frames: list[dict]) -> str:
    for frame in frames:
        if any(f"/{name}/" in frame["filename"] for name in OURS):
            return f"{frame['filename'].split('/src/')[-1]}:{frame['line']} {frame['name']}"
    return "elsewhere"


def peak_report(snapshot: dict, top: int = 10) -> list[str]:
    """The peak of live allocations in the recorded trace and the largest origins alive then."""
    live: dict[int, tuple[int, str]] = {}
    total = peak = 0
    at_peak: dict[int, tuple[int, str]] = {}
    for event in (e for trace in snapshot["device_traces"] for e in trace):
        if event["action"] == "alloc":
            live[event["addr"]] = (event["size"], _origin(event.get("frames", [])))
            total += event["size"]
            if total > peak:
                peak, at_peak = total, dict(live)
        elif event["action"] == "free_completed" and event["addr"] in live:
            total -= live.pop(event["addr"])[0]
    by_origin: Counter[str] = Counter()
    for size, origin in at_peak.values():
        by_origin[origin] += size
    lines = [f"peak of the recorded trace: {peak / GIB:.2f} GiB"]
    lines += [f"  {size / GIB:6.2f} GiB  {origin}" for origin, size in by_origin.most_common(top)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--graphs", default="1", choices=("0", "1"))
    parser.add_argument("--shape", default="smollm2", choices=sorted(SHAPES))
    args = parser.parse_args()
    os.environ["AUTOROUND_CUDA_GRAPHS"] = args.graphs
    torch.manual_seed(0)
    config = LlamaConfig(**{**SHAPES[args.shape], "num_hidden_layers": args.layers})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).cuda().eval()
    ids = torch.randint(0, 49152, (args.nsamples, 2048))
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / GIB
    torch.cuda.memory._record_memory_history(max_entries=200_000)
    settings = SignRoundSettings(iters=args.iters, batch_size=8)
    autoround.quantize(model, "W4A16", tuning=settings, calibration=ids, device="cuda", progress=False)
    snapshot = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    print(f"graphs={args.graphs}: model {before:.2f} GiB before; peak max_memory_allocated "
          f"{torch.cuda.max_memory_allocated() / GIB:.2f} GiB")  # fmt: skip
    print("\n".join(peak_report(snapshot)))


if __name__ == "__main__":
    main()
