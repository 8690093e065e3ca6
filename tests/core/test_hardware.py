"""native_bf16: bf16 products count as native only where the device computes them natively."""

from __future__ import annotations

import pytest
import torch

from autoround import hardware
from autoround.errors import UsageError


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


# --- check_device: a device this torch cannot compute on is refused, naming it -----------------


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_cpu_is_always_accepted(device) -> None:
    assert hardware.check_device(device) == torch.device("cpu")


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "xpu"])
def test_an_accelerator_this_torch_does_not_see_is_refused(device: str, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    with pytest.raises(UsageError, match=f"device '{device}' is not available") as info:
        hardware.check_device(device)
    assert "--device cpu" in str(info.value)


def test_an_index_past_the_visible_devices_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert hardware.check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UsageError, match=r"device 'cuda:2' does not exist: 2 cuda device\(s\) visible"):
        hardware.check_device("cuda:2")


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", ""])
def test_an_unknown_device_name_lists_the_allowed_ones(device: str) -> None:
    with pytest.raises(UsageError, match=f"device '{device}' is not") as info:
        hardware.check_device(device)
    assert all(name in str(info.value) for name in hardware.COMPUTE_DEVICE_TYPES)


def test_a_device_torch_knows_but_cannot_compute_on_is_refused() -> None:
    with pytest.raises(UsageError, match="device 'meta' is not supported"):
        hardware.check_device("meta")
