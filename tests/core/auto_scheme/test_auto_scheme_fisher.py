"""The loss-gradient Fisher of each block's output: the summed squared gradient of the model's
cross-entropy with respect to that output, per hidden dimension, as autograd gives it directly."""

from __future__ import annotations

import torch

from autoround.auto_scheme.fisher import block_fisher


def test_the_fisher_is_the_summed_squared_gradient_of_each_block_output(tiny_llama) -> None:
    ids = torch.randint(0, 128, (3, 16), generator=torch.Generator().manual_seed(0))
    blocks = list(tiny_llama.model.layers)
    found = block_fisher(tiny_llama, blocks, ids, progress=False)
    assert all(p.grad is None for p in tiny_llama.parameters())  # no weight gradients are kept
    outputs: list[torch.Tensor] = []
    expected = [torch.zeros(96) for _ in blocks]
    for row in ids:
        outputs.clear()
        handles = [
            b.register_forward_hook(lambda _m, _a, out: outputs.append(out) or out.retain_grad())
            for b in blocks
        ]
        embeds = tiny_llama.get_input_embeddings()(row[None]).detach().requires_grad_(True)
        loss = tiny_llama(inputs_embeds=embeds, labels=row[None]).loss * (len(row) - 1)
        loss.backward()
        for handle in handles:
            handle.remove()
        for i, out in enumerate(outputs):
            expected[i] += out.grad.pow(2).reshape(-1, 96).sum(0)
    for got, want in zip(found, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-8)


def test_parameters_keep_their_requires_grad(tiny_llama) -> None:
    tiny_llama.lm_head.weight.requires_grad_(False)
    block_fisher(tiny_llama, list(tiny_llama.model.layers), torch.randint(0, 128, (1, 8)), progress=False)
    assert not tiny_llama.lm_head.weight.requires_grad
    assert tiny_llama.model.layers[0].mlp.up_proj.weight.requires_grad
