"""What the compute device does natively, for choices that trade precision for speed."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from autoround.errors import UsageError


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


def autocast_dtype(amp: bool, device: torch.device | str = "cpu") -> torch.dtype | None:
    """The dtype to autocast matrix products to under Intel's ``amp``: bf16 where ``device``
    multiplies bf16 natively, else None (float32). The one place ``amp`` is decided."""
    return torch.bfloat16 if amp and native_bf16(device) else None


#: Device types a run can compute on.
COMPUTE_DEVICE_TYPES = ("cpu", "cuda", "xpu", "mps")


def check_device(device: torch.device | str) -> torch.device:
    """``device`` as a :class:`torch.device`, refused (UsageError naming it) when this torch
    cannot compute on it: an unknown type, or an accelerator that is absent or out of range."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(
            f"device {device!r} is not a device name; allowed: {list(COMPUTE_DEVICE_TYPES)} "
            f"(with an index, e.g. cuda:1)"
        ) from exc
    if parsed.type not in COMPUTE_DEVICE_TYPES:
        raise UsageError(f"device {device!r} is not supported; allowed: {list(COMPUTE_DEVICE_TYPES)}")
    if parsed.type == "cpu":
        return parsed
    backend = getattr(torch, parsed.type, None)
    if backend is None or not backend.is_available():
        build = torch.__version__
        raise UsageError(
            f"device {device!r} is not available: this torch ({build}) sees no {parsed.type} device; "
            f"use --device cpu or install a torch build for it"
        )
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if parsed.index is not None and parsed.index >= count:
        raise UsageError(f"device {device!r} does not exist: {count} {parsed.type} device(s) visible")
    return parsed
