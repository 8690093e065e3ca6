"""Triton W2/W4/W8 GEMM vs bf16 torch.matmul on Llama-3-8B shapes (GPU only).

    python bench/kernels_gpu.py            # on the device machine (PYTHONPATH=packages/autoround-core/src)

Times with triton.testing.do_bench (median, after warm-up); reports achieved GB/s of the packed
weight + activations + output, and the speed-up over bf16 matmul. Checks each result against the
plain-torch twin (relative error) on the same inputs.
"""

from __future__ import annotations

import torch
from triton.testing import do_bench

from autoround.kernels import reference, triton_gemm

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (4096, 1024)]  # (K, N)
MS = [1, 8, 16, 128, 4096]
SCHEMES = [("W4A16 g128", 4, 128), ("W2A16 g64", 2, 64), ("W8A16 g128", 8, 128)]


def packed(k: int, n: int, bits: int, group: int, device: str) -> tuple[torch.Tensor, ...]:
    per_word = 32 // bits
    qweight = torch.randint(-(2**31), 2**31 - 1, (k // per_word, n), dtype=torch.int32, device=device)
    qzeros = torch.randint(-(2**31), 2**31 - 1, (k // group, n // per_word), dtype=torch.int32, device=device)
    scales = (torch.rand(k // group, n, device=device) * 0.01).half()
    return qweight, qzeros, scales


def main() -> None:
    device = "cuda"
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| scheme | K x N | M | bf16 matmul us | ours us | speed-up | ours GB/s | max rel err |")
    print("|---|---|---|---|---|---|---|---|")
    for name, bits, group in SCHEMES:
        for k, n in SHAPES:
            qw, qz, sc = packed(k, n, bits, group, device)
            dense = torch.randn(k, n, device=device, dtype=torch.bfloat16)
            for m in MS:
                x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
                ours = do_bench(lambda: triton_gemm.quant_matmul(x, qw, qz, sc, bits, group, 1))  # noqa: B023
                base = do_bench(lambda: x @ dense)  # noqa: B023
                got = triton_gemm.quant_matmul(x, qw, qz, sc, bits, group, 1).float()
                want = reference.quant_matmul(x.float(), qw, qz, sc, bits, group, 1).float()
                err = ((got - want).abs().max() / want.abs().max().clamp(min=1e-6)).item()
                nbytes = qw.numel() * 4 + qz.numel() * 4 + sc.numel() * 2 + x.numel() * 2 + m * n * 2
                print(
                    f"| {name} | {k}x{n} | {m} | {base * 1e3:.1f} | {ours * 1e3:.1f} | {base / ours:.2f}x | "
                    f"{nbytes / ours / 1e6:.0f} | {err:.1e} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
