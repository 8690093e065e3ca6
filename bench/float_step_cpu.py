"""What the float tuning steps cost on this CPU: single torch ops on one SmolLM2-sized weight
(bool masks against float32 ones, ``log2`` against the exponent bits, the float8 round trip),
then one SignRound iteration of a one-layer block per weight type (the tuning step's forward and
backward plus the layer's own product, through the public ``tune_block``).

    uv run python bench/float_step_cpu.py [--threads 2] [--reps 50] [--iters 20]

Prints milliseconds (single ops: mean of ``--reps`` after two warm-ups; iterations: best of 3
runs of ``--iters``). Results: docs/benchmarks.md ("The tuning steps without bool masks").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from autoround.algorithms import SignRoundSettings, tune_block
from autoround.schemes import PRESETS

SHAPE = (1536, 576)  # SmolLM2's MLP up projection: (out, in)
EXPONENT_BITS = 0x7F800000


def mean_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1000


def single_ops(reps: int) -> None:
    a = torch.randn(SHAPE).flatten() * 2
    b = a.clamp(-2, 2)
    as_bool = a >= 0.5
    as_float = as_bool.float()

    def float_eq() -> torch.Tensor:
        return torch.eq(a, b, out=torch.empty_like(a))

    def exponent_bits() -> torch.Tensor:
        return a.abs().view(torch.int32).bitwise_and(EXPONENT_BITS).view(torch.float32)

    ops: dict[str, Callable[[], object]] = {
        "a == b (bool)": lambda: a == b,
        "torch.eq(a, b, out=float32)": float_eq,
        "torch.where(bool, a, 0.0)": lambda: torch.where(as_bool, a, 0.0),
        "a * bool": lambda: a * as_bool,
        "a * float mask": lambda: a * as_float,
        "log2": lambda: torch.log2(a.abs()),
        "binade (exponent bits)": exponent_bits,
        "float8 E4M3 round trip": lambda: a.to(torch.float8_e4m3fn).float(),
        "a * 2": lambda: a * 2.0,
    }
    for name, fn in ops.items():
        print(f"{name:34s} {mean_ms(fn, reps):7.3f} ms")


def iteration_ms(preset: str, iters: int) -> float:
    """Best of three: seconds per SignRound iteration of one Linear under ``preset``'s
    weight-only form (4 x 256 tokens), in milliseconds."""
    gen = torch.Generator().manual_seed(0)
    block = nn.Sequential(nn.Linear(SHAPE[1], SHAPE[0], bias=False))
    nn.init.normal_(block[0].weight, std=0.02, generator=gen)
    inputs = torch.randn(4, 256, SHAPE[1], generator=gen)
    with torch.no_grad():
        targets = block(inputs)
    layers = {"0": PRESETS[preset].replace(act_bits=16)}
    best = float("inf")
    for _ in range(3):
        settings = SignRoundSettings(iters=iters, batch_size=4, amp=False)
        start = time.perf_counter()
        tune_block(block, inputs, targets, {}, layers, settings)
        best = min(best, (time.perf_counter() - start) / iters * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"weight {SHAPE[0]}x{SHAPE[1]}, {args.threads} threads, torch {torch.__version__}")
    single_ops(args.reps)
    for preset in ("W4A16", "MXFP4", "MXFP8", "NVFP4", "FPW8A16"):
        print(f"SignRound iteration, one layer, {preset:8s} {iteration_ms(preset, args.iters):7.2f} ms")


if __name__ == "__main__":
    main()
