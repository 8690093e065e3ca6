"""native_bf16: bf16 products count as native only where the device computes them natively."""

from __future__ import annotations

import pytest
import torch

from autoround import hardware


@pytest.fixture
def cpu_flags(monkeypatch, tmp_path):
    """Pretend /proc/cpuinfo lists the given flags, torch dispatching ``capability``."""

    def set_flags(flags: str, capability: str = "AVX512") -> None:
        cpuinfo = tmp_path / "cpuinfo"
        cpuinfo.write_text(f"flags\t\t: {flags}\n")
        real_path = hardware.Path
        monkeypatch.setattr(hardware, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        hardware._cpu_has_native_bf16.cache_clear()

    yield set_flags
    hardware._cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize(
    ("flags", "capability", "expected"),
    [
        ("fpu sse avx2 avx512f avx512_bf16", "AVX512", True),
        ("fpu sse avx2 amx_bf16 amx_tile", "AVX512", True),
        ("fpu sse avx2 fma", "AVX2", False),
        ("fpu sse avx2 avx512f", "AVX512", False),
        ("fpu avx512_bf16 amx_bf16", "AVX2", False),  # ATEN_CPU_CAPABILITY=avx2: emulated
    ],
    ids=["avx512-bf16", "amx", "avx2-only", "avx512-without-bf16", "dispatch-capped-at-avx2"],
)
def test_cpu_bf16_is_native_only_with_the_instructions_and_the_dispatch(
    cpu_flags, flags, capability, expected
) -> None:
    cpu_flags(flags, capability)
    assert hardware.native_bf16("cpu") is expected


def test_devices_other_than_cpu_and_cuda_are_not_native(cpu_flags) -> None:
    cpu_flags("avx512_bf16")
    assert hardware.native_bf16("meta") is False
