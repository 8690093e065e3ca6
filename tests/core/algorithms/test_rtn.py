"""Round-to-nearest over a model: every planned layer quantized in place, nothing else touched."""

from __future__ import annotations

import pytest
import torch

from autoround.algorithms import quantize_rtn
from autoround.layer_plan import resolve
from autoround.layer_quant import quantize_weight
from autoround.schemes import PRESETS


def test_planned_layers_become_their_qdq_and_others_are_untouched(tiny_llama) -> None:
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    plan = resolve(tiny_llama, PRESETS["W4A16G32"])
    layers = quantize_rtn(tiny_llama, plan, progress=False)
    assert set(layers) == set(plan.quantized())
    for name, tensor in tiny_llama.state_dict().items():
        module_name = name.rsplit(".", 1)[0]
        if module_name in layers and name.endswith("weight"):
            expected, _ = quantize_weight(before[name], PRESETS["W4A16G32"])
            assert torch.equal(tensor, expected), name
        else:
            assert torch.equal(tensor, before[name]), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rtn_on_cuda_equals_rtn_on_cpu(tiny_llama_bf16) -> None:
    import copy

    on_cpu = copy.deepcopy(tiny_llama_bf16)
    plan = resolve(tiny_llama_bf16, PRESETS["W4A16G32"])
    cpu_layers = quantize_rtn(on_cpu, plan, progress=False)
    cuda_layers = quantize_rtn(tiny_llama_bf16, plan, device="cuda", progress=False)
    for name in cpu_layers:
        assert torch.equal(cpu_layers[name].scale, cuda_layers[name].scale), name
    for (name, a), b in zip(on_cpu.state_dict().items(), tiny_llama_bf16.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert next(tiny_llama_bf16.parameters()).device.type == "cpu", "weights are written back where they live"
