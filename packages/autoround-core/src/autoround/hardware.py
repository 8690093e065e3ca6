"""What the compute device does natively, for choices that trade precision for speed."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16 in the CPU's flags (Linux; False where they cannot be read), and
    torch dispatching beyond AVX2 (``ATEN_CPU_CAPABILITY=avx2`` emulates an AVX2-only CPU)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return False
    has_bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    return has_bf16 and torch.backends.cpu.get_cpu_capability() not in ("DEFAULT", "AVX2")


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bf16 matrices natively (then faster than float32).

    On CPUs without such instructions (AVX2 only, say) bf16 products are emulated and several
    times slower than float32 (docs/benchmarks.md); with AMX they are several times faster.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_native_bf16()
