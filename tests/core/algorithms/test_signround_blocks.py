"""quantize_block: one step of the block walk, for hosts that walk the blocks themselves."""

from __future__ import annotations

import torch

from autoround.algorithms.block_activations import BlockActivations
from autoround.algorithms.signround import SignRoundSettings
from autoround.algorithms.signround_blocks import quantize_block, quantize_signround
from autoround.layer_plan import resolve
from autoround.modeling.capture import capture_block_inputs
from autoround.schemes import PRESETS


def test_walking_the_blocks_step_by_step_reproduces_the_driver(make_llama) -> None:
    driven, stepped = make_llama(), make_llama()
    torch.manual_seed(3)
    ids = torch.randint(0, 128, (6, 16))
    settings = SignRoundSettings(iters=4, batch_size=4)
    plan = resolve(driven, PRESETS["W4A16G32"])
    results, reports = quantize_signround(driven, plan, ids, settings, progress=False)

    captured = capture_block_inputs(stepped, stepped.model.layers[0], ids, torch.device("cpu"), False)
    activations = BlockActivations.start(captured.hidden, True, torch.float32, torch.device("cpu"))
    for index, block in enumerate(stepped.model.layers):
        name = f"model.layers.{index}"
        layers = {k[len(name) + 1 :]: s for k, s in plan.in_block(name).items()}
        step = quantize_block(block, name, layers, activations, captured.kwargs, settings, index)
        expected = reports[index]
        assert (step.report.rtn_loss, step.report.tuned_loss, step.report.best_iter) == (
            expected.rtn_loss,
            expected.tuned_loss,
            expected.best_iter,
        )
        for rel, quant in step.quants.items():
            assert torch.equal(quant.scale, results[f"{name}.{rel}"].scale), rel

    for (name, a), (_, b) in zip(driven.state_dict().items(), stepped.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
