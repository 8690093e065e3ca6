"""The float and activation presets on a CUDA device (issue 20): what the CPU gives, on the GPU.

RTN of every float preset run with ``device="cuda"`` gives the CPU's quantize-dequantized weights
and per-group parameters bit for bit (the reference: the same call on the CPU, whose values the
Intel fixtures pin in tests/core/dtypes); the calibrated activation ranges come from a forward
whose matrix products sum in another order on the GPU, so they agree to float32 rounding.
SignRound of the float weight types on CUDA gives, replayed from CUDA graphs, the eager loop's
result bit for bit, and no tuned block ends worse than RTN on the calibration samples.
"""

from __future__ import annotations

import copy

import pytest
import torch

import autoround
from autoround.algorithms.signround import SignRoundSettings
from autoround.schemes import FLOAT_PRESETS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

#: INT8 is INT8_W8A8 under Intel's other name
RTN_PRESETS = sorted(set(FLOAT_PRESETS) - {"INT8"})
#: One of each weight data type and each activation kind SignRound tunes with
TUNED_PRESETS = ["MXFP4", "MXFP8_RCEIL", "MXINT4", "NVFP4", "FPW8A16", "FP8_BLOCK", "FP8_STATIC"]


@pytest.fixture
def calibration() -> torch.Tensor:
    return torch.randint(0, 128, (8, 32), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("preset", RTN_PRESETS)
def test_rtn_on_cuda_gives_the_cpu_weights_and_parameters(tiny_llama, calibration, preset: str) -> None:
    on_cpu = autoround.quantize(copy.deepcopy(tiny_llama), preset, calibration=calibration, progress=False)
    on_cuda = autoround.quantize(tiny_llama, preset, calibration=calibration, device="cuda", progress=False)

    assert next(tiny_llama.parameters()).device.type == "cpu", "the model stays where it was"
    cuda_weights = on_cuda.model.state_dict()
    for name, value in on_cpu.model.state_dict().items():
        assert torch.equal(value, cuda_weights[name]), name
    for name, cpu_layer in on_cpu.layers.items():
        cuda_layer = on_cuda.layers[name]
        assert torch.equal(cpu_layer.scale, cuda_layer.scale.cpu()), name
        assert torch.equal(cpu_layer.zero, cuda_layer.zero.cpu()), name
        if cpu_layer.global_scale is not None:
            assert cuda_layer.global_scale is not None
            assert torch.equal(cpu_layer.global_scale, cuda_layer.global_scale.cpu()), name
        if cpu_layer.input_absmax is not None:
            assert cuda_layer.input_absmax is not None
            absmax = cuda_layer.input_absmax.cpu()
            torch.testing.assert_close(absmax, cpu_layer.input_absmax, rtol=1e-5, atol=0)


@pytest.mark.parametrize("preset", TUNED_PRESETS)
def test_signround_on_cuda_replays_the_eager_loop_bit_for_bit(
    monkeypatch, caplog, make_llama, calibration, preset: str
) -> None:
    settings = SignRoundSettings(iters=12, batch_size=4)

    def tuned(graphs: str) -> dict[str, torch.Tensor]:
        monkeypatch.setenv("AUTOROUND_CUDA_GRAPHS", graphs)
        qm = autoround.quantize(
            make_llama(), preset, tuning=settings, calibration=calibration, device="cuda", progress=False
        )
        return qm.model.state_dict()

    eager, replayed = tuned("0"), tuned("1")
    for name, value in eager.items():
        assert value.device.type == "cpu", name
        assert torch.isfinite(value).all(), name
        assert torch.equal(replayed[name], value), name
    assert "CUDA graph failed" not in caplog.text
