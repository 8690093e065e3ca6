"""What the float tuning steps cost on this CPU: single ops on one SmolLM2-sized weight (bool
masks against float32 ones), then one tuning step (forward + backward) of each float type.

    uv run python bench/float_step_cpu.py [--threads 2] [--reps 50]

Prints milliseconds (mean of ``--reps`` after two warm-ups; the tuning steps: best of 7 rounds
of 10). Results: docs/benchmarks.md ("The tuning steps without bool masks").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from autoround.dtypes import DTYPES
from autoround.dtypes.float_masks import float_mask
from autoround.dtypes.mx_elements import E2M1, E4M3, binade_power
from autoround.dtypes.mx_tuning import group_amax, mx_tuning_qdq
from autoround.dtypes.nv_fp import nv_tuning_qdq

SHAPE = (1536, 576)  # SmolLM2's MLP down / up projection


def mean_ms(fn: Callable[[], object], reps: int) -> float:
    fn()
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1000


def best_ms(fn: Callable[[], object], rounds: int = 7, reps: int = 10) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps * 1000)
    return best


def single_ops(reps: int) -> None:
    a = torch.randn(SHAPE).flatten() * 2
    b = a.clamp(-2, 2)
    as_bool = a >= 0.5
    as_float = as_bool.float()
    ops: dict[str, Callable[[], object]] = {
        "a == b (bool)": lambda: a == b,
        "torch.eq(a, b, out=float32)": lambda: float_mask(torch.eq, a, b),
        "torch.where(bool, a, 0.0)": lambda: torch.where(as_bool, a, 0.0),
        "a * bool": lambda: a * as_bool,
        "a * float mask": lambda: a * as_float,
        "log2": lambda: torch.log2(a.abs()),
        "binade power (exponent bits)": lambda: binade_power(a.abs(), E4M3),
        "float8 E4M3 round trip": lambda: a.to(torch.float8_e4m3fn).float(),
        "a * 2": lambda: a * 2.0,
    }
    for name, fn in ops.items():
        print(f"{name:34s} {mean_ms(fn, reps):7.3f} ms")


def tuning_steps() -> None:
    weight = torch.randn(SHAPE) * 0.02
    gen = torch.Generator().manual_seed(0)
    upstream = torch.randn(SHAPE, generator=gen)

    def mx(element):
        grouped = weight.reshape(-1, 32)
        amax = group_amax(grouped)
        v = (torch.rand(grouped.shape, generator=gen) - 0.5).requires_grad_(True)
        factor = torch.ones(grouped.shape[0], requires_grad=True)
        up = upstream.reshape(grouped.shape)
        return lambda: (mx_tuning_qdq(grouped, amax, element, "floor", v, factor) * up).sum().backward()

    def nv():
        grouped = weight.reshape(-1, 16)
        amax = group_amax(grouped)
        v = (torch.rand(grouped.shape, generator=gen) - 0.5).requires_grad_(True)
        factor = torch.ones(grouped.shape[0], requires_grad=True)
        up = upstream.reshape(grouped.shape)
        return lambda: (nv_tuning_qdq(grouped, amax, v, factor) * up).sum().backward()

    def fp8():
        dtype = DTYPES["fp"]
        grouped = weight  # one scale per output row
        v = (torch.rand(grouped.shape, generator=gen) - 0.5).requires_grad_(True)
        ones = torch.ones(grouped.shape[0], requires_grad=True)
        factor = torch.ones(grouped.shape[0], requires_grad=True)
        bounds = dtype.group_range(grouped)
        return lambda: (
            (dtype.tuning_qdq(grouped, bounds, 8, True, v, ones, factor) * upstream).sum().backward()
        )

    steps = {"MXFP4 (E2M1)": mx(E2M1), "MXFP8 (E4M3)": mx(E4M3), "NVFP4": nv(), "FP8 per row": fp8()}
    for name, fn in steps.items():
        print(f"tuning step {name:22s} {best_ms(fn):7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"weight {SHAPE[0]}x{SHAPE[1]}, {args.threads} threads, torch {torch.__version__}")
    single_ops(args.reps)
    tuning_steps()


if __name__ == "__main__":
    main()
