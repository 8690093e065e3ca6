"""Triton W2/W4/W8 GEMM vs bf16 torch.matmul on Llama-3-8B shapes (GPU only).

    PYTHONPATH=packages/autoround-core/src python3 bench/kernels_gpu.py [--quick] [--json out.json]

Times GPU work with ``triton.testing.do_bench_cudagraph`` (replays of a captured graph, so the
microsecond kernels are not timed as their Python launch), and ours also eagerly with
``do_bench`` (launch included, L2 flushed) in the ``eager us`` column. Each
row reports the kernel configuration the per-shape autotuner chose, the achieved GB/s of the
bytes the kernel must move (packed weight, scales, zeros, activations, output) against the card's
measured copy bandwidth, the speed-up over bf16 ``x @ W``, and the relative error against the
plain-torch twin on the same inputs (fresh random data per row).
"""

from __future__ import annotations

import argparse
import json

import torch
from triton.testing import do_bench, do_bench_cudagraph

from autoround.kernels import reference, triton_configs, triton_gemm

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (4096, 1024)]  # (K, N)
MS = [1, 8, 16, 128, 4096]
# (name, bits, group, sym, the Ms it runs at: None = all)
SCHEMES = [
    ("W4A16 g128", 4, 128, True, None),
    ("W4A16 g128 asym", 4, 128, False, [1, 16]),
    ("W4A16 g64", 4, 64, True, [1, 16]),
    ("W4A16 g32", 4, 32, True, [1, 16]),
    ("W2A16 g64", 2, 64, True, [1, 16, 4096]),
    ("W2A16 g32", 2, 32, True, [1]),
    ("W8A16 g128", 8, 128, True, [1, 16, 4096]),
]


def packed(k: int, n: int, bits: int, group: int) -> tuple[torch.Tensor, ...]:
    per_word = 32 // bits
    qweight = torch.randint(-(2**31), 2**31 - 1, (k // per_word, n), dtype=torch.int32, device="cuda")
    qzeros = torch.randint(-(2**31), 2**31 - 1, (k // group, n // per_word), dtype=torch.int32, device="cuda")
    scales = (torch.rand(k // group, n, device="cuda") * 0.01 + 1e-3).half()
    return qweight, qzeros, scales


def cold_l2_us(fn, reps: int = 40, trials: int = 5) -> float:
    """GPU time of ``fn`` with the L2 cache flushed before each call, from CUDA-graph replays.

    Graph replays keep the Python launch out of the figure; writing a 256 MB buffer before each
    call evicts the weights from the 50 MB L2 (otherwise a 4096x4096 bf16 weight, 33 MB, would be
    served from L2 on every replay). The flushes alone are timed the same way and subtracted.
    """
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
    fn()
    torch.cuda.synchronize()

    def graph_ms(body) -> float:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(reps):
                flush.zero_()
                body()
        times = []
        for _ in range(trials):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        return sorted(times)[trials // 2]

    return (graph_ms(fn) - graph_ms(lambda: None)) / reps * 1e3


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=200)
    return 2 * src.numel() / (ms * 1e-3)


def bench_row(name: str, bits: int, group: int, sym: bool, k: int, n: int, m: int, peak: float) -> dict:
    qw, qz, sc = packed(k, n, bits, group)
    offset = 1 if sym else 0
    dense = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    got = triton_gemm.quant_matmul(x, qw, qz, sc, bits, group, offset).float()  # autotunes this shape
    config = triton_configs._CHOSEN[triton_configs._cache_key((m, n, k, bits, group, x.dtype))]
    want = reference.quant_matmul(x.float(), qw, qz, sc, bits, group, offset).float()
    err = float((got - want).norm() / want.norm())

    def ours_fn():
        return triton_gemm.quant_matmul(x, qw, qz, sc, bits, group, offset)

    ours = do_bench_cudagraph(ours_fn, rep=100)
    base = do_bench_cudagraph(lambda: x @ dense, rep=100)
    ours_eager = do_bench(ours_fn, rep=100)
    ours_cold, base_cold = cold_l2_us(ours_fn), cold_l2_us(lambda: x @ dense)
    nbytes = qw.numel() * 4 + qz.numel() * 4 + sc.numel() * 2 + x.numel() * 2 + m * n * 2
    return {
        "scheme": name, "k": k, "n": n, "m": m, "bf16_us": base * 1e3, "ours_us": ours * 1e3,
        "speedup": base / ours, "gbs": nbytes / (ours * 1e-3) / 1e9, "of_copy": nbytes / (ours * 1e-3) / peak,
        "rel_err": err, "config": config.label, "ours_eager_us": ours_eager * 1e3,
        "bf16_cold_us": base_cold, "ours_cold_us": ours_cold, "speedup_cold": base_cold / ours_cold,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 4096x4096 and 4096x14336 rows")
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--schemes", help="comma-separated scheme names to run (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    peak = copy_bandwidth()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, copy {peak / 1e12:.2f} TB/s")
    # What split K adds around the kernel: zeroing the fp32 partial sums, casting them back.
    for n in (1024, 14336):
        extra = do_bench_cudagraph(lambda n=n: torch.zeros((1, n), device="cuda").to(torch.bfloat16), rep=100)
        print(f"split-K bookkeeping (zeros + cast) for N={n}: {extra * 1e3:.1f} us")
    print(
        "| scheme | K x N | M | bf16 us | ours us | speed-up | GB/s | of copy bw | eager us "
        "| cold-L2 bf16 / ours us | cold speed-up | rel err | config |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    wanted = args.schemes.split(",") if args.schemes else [s[0] for s in SCHEMES]
    for name, bits, group, sym, ms in (s for s in SCHEMES if s[0] in wanted):
        for k, n in SHAPES[:2] if args.quick else SHAPES:
            for m in ms or MS:
                row = bench_row(name, bits, group, sym, k, n, m, peak)
                rows.append(row)
                print(
                    f"| {name} | {k}x{n} | {m} | {row['bf16_us']:.1f} | {row['ours_us']:.1f} | "
                    f"{row['speedup']:.2f}x | {row['gbs']:.0f} | {row['of_copy']:.0%} | {row['ours_eager_us']:.1f} | "
                    f"{row['bf16_cold_us']:.1f} / {row['ours_cold_us']:.1f} | {row['speedup_cold']:.2f}x | {row['rel_err']:.1e} | "
                    f"{row['config']} |",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": torch.cuda.get_device_name(), "copy_bytes_per_s": peak, "rows": rows}, f, indent=1
            )


if __name__ == "__main__":
    main()
