"""Run one Triton kernel configuration a few times, for Nsight Compute to profile (GPU only).

    ncu --kernel-name regex:_gemv_kernel --launch-skip 2 --launch-count 1 --section SpeedOfLight \\
        python3 bench/profile_kernel_gpu.py --m 1 --config gemv
"""

from __future__ import annotations

import argparse

import torch

from autoround.kernels import triton_gemm
from autoround.kernels.triton_configs import KernelConfig

CONFIGS = {
    "gemv": KernelConfig(block_m=1, block_n=64, block_k=128, split_k=8, gemv=True),
    "decode-row": KernelConfig(block_m=1, block_n=128, block_k=128, split_k=8, unpack_reshape=True),
    "decode-dot": KernelConfig(block_m=16, block_n=128, block_k=128, split_k=8, unpack_reshape=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=1)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="gemv")
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--n", type=int, default=14336)
    args = parser.parse_args()
    per_word, group = 32 // args.bits, 128
    qweight = torch.randint(
        -(2**31), 2**31 - 1, (args.k // per_word, args.n), dtype=torch.int32, device="cuda"
    )
    qzeros = torch.randint(
        -(2**31), 2**31 - 1, (args.k // group, args.n // per_word), dtype=torch.int32, device="cuda"
    )
    scales = (torch.rand(args.k // group, args.n, device="cuda") * 0.01).half()
    x = torch.randn(args.m, args.k, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        triton_gemm.quant_matmul(x, qweight, qzeros, scales, args.bits, group, 1, config=CONFIGS[args.config])
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
