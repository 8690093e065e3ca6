"""The default measure: a unit's error is, summed over its layers and the calibration tokens, the
squared change its quantization makes to each layer's output, each output dimension weighted by
the summed squared loss gradient there, per token; for down_proj (whose output is added to the
residual stream at the block's end) that is exactly the block-output measure."""

from __future__ import annotations

import pytest
import torch

from autoround import AutoScheme
from autoround.auto_scheme import search_space
from autoround.auto_scheme.fisher import block_fisher, output_fisher
from autoround.auto_scheme.layer_error import measure
from autoround.auto_scheme.sensitivity import measure as block_measure
from autoround.layer_quant import quantize_weight

OPTIONS = "W2A16G32,W4A16G32,W8A16G32"


def calibration() -> torch.Tensor:
    return torch.randint(0, 128, (3, 16), generator=torch.Generator().manual_seed(0))


def reference(model, names: list[str], ids: torch.Tensor, schemes) -> dict[str, list[float]]:
    """Per layer and scheme, ``sum_t sum_o F[o] * ((W_q - W) x_t)[o] ** 2``, written out: the
    gradients from autograd sample by sample, the inputs from hooks, the deviation per token."""
    layers = {n: model.get_submodule(n) for n in names}
    fisher = {n: torch.zeros(m.out_features) for n, m in layers.items()}
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    outputs: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_m, args, out):
            inputs[name].append(args[0].detach().reshape(-1, args[0].shape[-1]))
            out.retain_grad()
            outputs[name] = out

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in layers.items()]
    for row in ids:
        embeds = model.get_input_embeddings()(row[None]).detach().requires_grad_(True)
        (model(inputs_embeds=embeds, labels=row[None]).loss * (len(row) - 1)).backward()
        for n in names:
            fisher[n] += outputs[n].grad.pow(2).reshape(-1, fisher[n].numel()).sum(0)
    for handle in handles:
        handle.remove()
    model.zero_grad(set_to_none=True)
    found = {}
    for n, layer in layers.items():
        x = torch.cat(inputs[n])
        row = []
        for scheme in schemes:
            change = quantize_weight(layer.weight.detach(), scheme)[0] - layer.weight.detach()
            row.append(float(((x @ change.T).pow(2) * fisher[n]).sum()))
        found[n] = row
    return found


def test_each_unit_error_is_the_fisher_weighted_output_change_of_its_layers(tiny_llama) -> None:
    ids = calibration()
    space = search_space(tiny_llama, AutoScheme(3.0, OPTIONS))
    names = [n for unit in space.units for n in unit.layers]
    expected = reference(tiny_llama, names, ids, space.auto.schemes)
    found = measure(tiny_llama, space, ids, progress=False)
    for unit, row in zip(space.units, found, strict=True):
        want = [sum(expected[n][i] for n in unit.layers) / ids.numel() for i in range(len(row))]
        assert row == pytest.approx(want, rel=1e-3), unit.layers


def test_down_proj_errors_equal_the_block_output_measure(tiny_llama) -> None:
    ids = calibration()
    space = search_space(tiny_llama, AutoScheme(3.0, OPTIONS))
    closed_form = measure(tiny_llama, space, ids, progress=False)
    rerun = block_measure(tiny_llama, space, ids, progress=False)
    downs = [i for i, unit in enumerate(space.units) if unit.layers[0].endswith("down_proj")]
    assert len(downs) == 2
    for i in downs:
        assert closed_form[i] == pytest.approx(rerun[i], rel=1e-4)


def test_the_fisher_does_not_depend_on_the_batch_size(tiny_llama) -> None:
    ids = calibration()
    blocks = list(tiny_llama.model.layers)
    alone = block_fisher(tiny_llama, blocks, ids, progress=False, batch_size=1)
    batched = output_fisher(tiny_llama, blocks, ids, batch_size=2, progress=False)
    for one, other in zip(alone, batched, strict=True):
        torch.testing.assert_close(one, other, rtol=1e-4, atol=1e-8)


def test_an_expert_that_saw_no_token_costs_nothing(tiny_qwen3_moe) -> None:
    space = search_space(tiny_qwen3_moe, AutoScheme(3.0, OPTIONS))
    experts = [n for unit in space.units for n in unit.layers if ".experts." in n]
    called: set[str] = set()
    handles = [
        tiny_qwen3_moe.get_submodule(n).register_forward_hook(lambda m, *_, n=n: called.add(n))
        for n in experts
    ]
    ids = calibration()[:1, :2]
    with torch.no_grad():
        tiny_qwen3_moe(input_ids=ids)
    for handle in handles:
        handle.remove()
    assert set(experts) - called  # two tokens leave some experts without any
    errors = measure(tiny_qwen3_moe, space, ids, progress=False)
    assert all(all(e >= 0 for e in row) for row in errors)
    assert any(row[0] > 0 for row in errors)
