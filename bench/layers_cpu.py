"""Layer-level CPU benchmark: the ``cpu`` backend vs dense fp32 and bf16 ``torch.matmul``.

    python bench/layers_cpu.py [--threads 2] [--repeats 7] [--quick]

Prints a markdown table: median milliseconds per ``x @ W^T`` for W4A16 g128, W4A16 g64, W2A16G64
and W8A16 on SmolLM2's shapes and 4096x4096, M in {1, 16, 512}, every row measured side by side:
dense ``torch.matmul`` in fp32 and bf16, the ``cpu`` backend with bf16 activations (its own choice
by M), the int4 op forced, fp32 activations (exact: cached dense fp32 weight), and the uncached
fp32 path (dequantize blocks per call). All in milliseconds (median). Ratios compare the
backend's bf16-activation choice with the dense matmuls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from autoround import quantize_weight
from autoround.backends import dense_forward, int4_forward
from autoround.formats import pack_layer
from autoround.nn import QuantLinear
from autoround.schemes import Scheme

#: The clock every timing reads; ``--clock cpu`` (one thread) swaps in this thread's CPU time.
CLOCK = time.perf_counter

SCHEMES = {
    "W4A16 g128": Scheme(bits=4, group_size=128),
    "W4A16 g64": Scheme(bits=4, group_size=64),
    "W2A16G64": Scheme(bits=2, group_size=64),
    "W8A16": Scheme(bits=8, group_size=128),
}
SHAPES = ((576, 576), (576, 1536), (1536, 576), (4096, 4096))  # (K, N)
ROWS = (1, 16, 512)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return statistics.median(times) * 1e3


def packed(scheme: Scheme, k: int, n: int) -> QuantLinear:
    weight = torch.randn(n, k) * 0.02
    qdq, quant = quantize_weight(weight, scheme)
    layer = QuantLinear(k, n, scheme, 1, backend="cpu")
    layer.load_state_dict(pack_layer(qdq, quant, 1))
    layer.prepare()
    return layer


def row(name: str, layer: QuantLinear, dense: dict[str, float], x: torch.Tensor, repeats: int) -> str:
    xb = x.bfloat16()
    auto = median_ms(lambda: layer(xb), repeats)
    int4 = median_ms(lambda: int4_forward(layer.backend_state, xb), repeats)
    exact = median_ms(lambda: layer(x), repeats)
    deq = median_ms(lambda: dense_forward(layer, x), max(1, repeats // 3))
    return (
        f"| {name} | {layer.in_features}x{layer.out_features} | {x.shape[0]} | {dense['fp32']:.3f} | "
        f"{dense['bf16']:.3f} | {auto:.3f} | {int4:.3f} | {exact:.3f} | {deq:.2f} | "
        f"{dense['fp32'] / auto:.2f}x | {dense['bf16'] / auto:.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: this thread's CPU time (with --threads 1; robust to other jobs on a shared machine)",
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="4096x4096 only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error("--clock cpu needs --threads 1 (other threads' time is not counted)")
        global CLOCK
        CLOCK = time.thread_time
    torch.manual_seed(0)
    shapes = SHAPES[-1:] if args.quick else SHAPES
    capability = torch.backends.cpu.get_cpu_capability()
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, CPU {capability}, median of {args.repeats}"
    )
    print(f"load average: {os.getloadavg()}\n")
    columns = ("scheme", "K x N", "M", "dense fp32", "dense bf16", "cpu, bf16 x", "int4 op", "cpu, fp32 x")
    extra = ("uncached fp32", "bf16 x vs fp32", "bf16 x vs bf16")
    print("| " + " | ".join((*columns, *extra)) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, n in shapes:
        weight = torch.randn(n, k)
        layers = {name: packed(scheme, k, n) for name, scheme in SCHEMES.items()}
        for m in ROWS:
            x = torch.randn(m, k)
            dense = dense_times(x, weight, args.repeats)
            for name, layer in layers.items():
                print(row(name, layer, dense, x, args.repeats), flush=True)


def dense_times(x: torch.Tensor, weight: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms of the dense fp32 and bf16 matmuls (each in its own dtype, as in such a model)."""
    xb, wb = x.bfloat16(), weight.bfloat16()
    return {
        "fp32": median_ms(lambda: x @ weight.t(), repeats),
        "bf16": median_ms(lambda: xb @ wb.t(), repeats),
    }


if __name__ == "__main__":
    main()
