"""The tuning loop: Intel's sampler, and CUDA graphs that replay the eager iteration exactly."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest
import torch

from autoround.algorithms.signround_loop import GRAPH_WARMUP, sample_order, use_cuda_graphs
from autoround.algorithms.signround_settings import SignRoundSettings
from autoround.api import quantize
from autoround.schemes import PRESETS


def test_every_sample_is_drawn_once_before_any_is_drawn_again() -> None:
    order = sample_order(nsamples=10, size=4, iters=6, seed=0)
    assert [len(batch) for batch in order] == [4] * 6
    # 10 samples, 4 a step: two steps use 8 distinct ones, then the 2 left are dropped and a
    # fresh shuffle starts (Intel's sampler)
    assert len(set(order[0] + order[1])) == 8
    assert len(set(order[2] + order[3])) == 8
    assert sample_order(10, 4, 6, seed=0) == order
    assert sample_order(10, 4, 6, seed=1) != order


def test_batches_larger_than_the_calibration_set_take_every_sample() -> None:
    assert all(sorted(batch) == [0, 1, 2] for batch in sample_order(3, 3, 4, seed=0))


@pytest.mark.parametrize(
    ("device", "inputs_on", "iters", "env", "expected"),
    [
        ("cpu", "cpu", 200, "1", False),
        ("cuda", "cpu", 200, "1", False),  # low_gpu_mem_usage: batches come from the host
        ("cuda", "cuda", GRAPH_WARMUP, "1", False),  # nothing left to replay
        ("cuda", "cuda", 200, "0", False),
        ("cuda", "cuda", 200, None, True),
        ("cuda", "cuda", 200, "1", True),
    ],
)
def test_when_iterations_are_replayed_from_a_cuda_graph(
    monkeypatch, device: str, inputs_on: str, iters: int, env: str | None, expected: bool
) -> None:
    if env is None:
        monkeypatch.delenv("AUTOROUND_CUDA_GRAPHS", raising=False)
    else:
        monkeypatch.setenv("AUTOROUND_CUDA_GRAPHS", env)
    # only the activations' device matters: a stand-in, so no CUDA is needed
    inputs = cast(torch.Tensor, SimpleNamespace(device=torch.device(inputs_on)))
    target = torch.device(device)
    assert use_cuda_graphs(target, inputs, SignRoundSettings(iters=iters)) is expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("scheme", ["W4A16G32", "W2A16G32"])
def test_graph_replay_gives_the_eager_result_bit_for_bit(
    monkeypatch, caplog, make_llama, scheme: str
) -> None:
    calibration = torch.randint(0, 128, (8, 32), generator=torch.Generator().manual_seed(1))
    settings = SignRoundSettings(iters=12, batch_size=4)

    def tuned(graphs: str) -> dict[str, torch.Tensor]:
        monkeypatch.setenv("AUTOROUND_CUDA_GRAPHS", graphs)
        qm = quantize(
            make_llama(),
            PRESETS[scheme],
            tuning=settings,
            calibration=calibration,
            device="cuda",
            progress=False,
        )
        return qm.model.state_dict()

    eager, replayed = tuned("0"), tuned("1")
    for name, value in eager.items():
        assert torch.equal(replayed[name], value), name
    # Every block of both runs (a second run records into a fresh pool) was replayed, none fell
    # back to eager iterations.
    again = tuned("1")
    assert all(torch.equal(again[name], value) for name, value in eager.items())
    assert "CUDA graph failed" not in caplog.text
