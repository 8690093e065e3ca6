"""While tuning on an accelerator, the model's blocks wait on the CPU and come back at the end."""

from __future__ import annotations

import pytest
import torch

from autoround.algorithms.block_placement import blocks_on_host
from autoround.algorithms.signround_blocks import quantize_signround
from autoround.algorithms.signround_settings import SignRoundSettings
from autoround.layer_plan import resolve
from autoround.schemes import PRESETS

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _devices(model) -> set[str]:
    return {p.device.type for p in model.model.layers.parameters()}


def test_tuning_on_the_cpu_moves_nothing(make_llama) -> None:
    model = make_llama()
    before = [p.data_ptr() for p in model.parameters()]
    with blocks_on_host(model.model.layers, torch.device("cpu")):
        assert [p.data_ptr() for p in model.parameters()] == before


@pytest.mark.gpu
@needs_cuda
def test_blocks_wait_on_the_cpu_while_tuning_and_return_to_the_gpu(make_llama) -> None:
    model = make_llama().cuda()
    seen: list[set[str]] = []
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    quantize_signround(
        model,
        resolve(model, PRESETS["W4A16G32"]),
        ids,
        SignRoundSettings(iters=2, batch_size=2),
        device="cuda",
        progress=False,
        on_block_done=lambda index, quants, report: seen.append(_devices(model)),
    )
    assert seen and all(devices == {"cpu"} for devices in seen)
    assert _devices(model) == {"cuda"}
    assert model.model.embed_tokens.weight.device.type == "cuda"  # never moved


@pytest.mark.gpu
@needs_cuda
def test_blocks_return_to_the_gpu_when_tuning_fails(make_llama) -> None:
    model = make_llama().cuda()

    def fail(index, quants, report) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quantize_signround(
            model,
            resolve(model, PRESETS["W4A16G32"]),
            torch.randint(0, 128, (4, 16)),
            SignRoundSettings(iters=2, batch_size=2),
            device="cuda",
            progress=False,
            on_block_done=fail,
        )
    assert _devices(model) == {"cuda"}
