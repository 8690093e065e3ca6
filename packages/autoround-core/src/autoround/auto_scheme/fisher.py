"""How much the language-model loss cares about each output dimension of some modules: the
diagonal of the (empirical) Fisher information at those outputs, one vector per module.

``fisher[m][i]`` is the sum over calibration tokens of ``(dL / dy_m[t, i])**2``, ``y_m`` being
module ``m``'s output and ``L`` the model's next-token cross-entropy summed over tokens. A
perturbation ``delta`` of that output then costs about ``0.5 * sum_t sum_i fisher[m][i] / tokens *
delta[t, i]**2`` of loss (the second-order term; the first-order one averages out at a trained
model), which is what :mod:`autoround.auto_scheme.layer_error` (the modules: the searched Linear
layers) and :mod:`autoround.auto_scheme.sensitivity` (the decoder blocks) weigh errors by. One
forward and backward of the full-precision model per batch of samples, no weight gradients; each
token's gradient depends on its own sample only, so batching changes nothing but speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm

#: Tokens per forward and backward. On a 2-core CPU two 256-token samples a pass ran 1.25x faster
#: than one, four only 1.05x faster than two while holding 1 GB more for SmolLM2 (the activations
#: kept for the backward and the logits over the vocabulary grow with the pass).
GRADIENT_TOKENS = 512


def output_fisher(
    model: nn.Module,
    modules: Sequence[nn.Module],
    input_ids: torch.Tensor,
    batch_size: int | None = None,
    progress: bool = True,
) -> list[torch.Tensor]:
    """Per module, the summed squared loss gradient of every output dimension (float32, CPU),
    over ``input_ids`` (nsamples, seqlen) run ``batch_size`` samples at a time (None: as many as
    fit in :data:`GRADIENT_TOKENS`, at least one)."""
    sums = [torch.zeros(0) for _ in modules]
    handles = [module.register_forward_hook(_collector(sums, i)) for i, module in enumerate(modules)]
    embeddings = cast(Any, model).get_input_embeddings()
    handles.append(embeddings.register_forward_hook(lambda _m, _a, out: out.requires_grad_(True)))
    flags = [(p, p.requires_grad) for p in model.parameters()]
    device = next(model.parameters()).device
    batches = input_ids.split(batch_size or max(1, GRADIENT_TOKENS // input_ids.shape[1]))
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for rows in tqdm(batches, desc="AutoScheme loss gradients", unit="batch", disable=not progress):
            ids = rows.to(device)
            with torch.enable_grad():
                out = model(input_ids=ids, labels=ids, use_cache=False)
                # the loss is the mean over every predicted token: make it their sum
                (out.loss * (ids.shape[0] * (ids.shape[1] - 1))).backward()
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
    return sums


def block_fisher(
    model: nn.Module,
    blocks: Sequence[nn.Module],
    input_ids: torch.Tensor,
    progress: bool = True,
    batch_size: int | None = None,
) -> list[torch.Tensor]:
    """Per decoder block, the summed squared loss gradient of every hidden dimension of its
    output (the residual stream after it)."""
    return output_fisher(model, blocks, input_ids, batch_size, progress)


def _collector(sums: list[torch.Tensor], index: int) -> Any:
    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        if not isinstance(hidden, torch.Tensor) or not hidden.requires_grad:
            return

        def accumulate(grad: torch.Tensor) -> None:
            squared = grad.detach().float().pow(2).reshape(-1, grad.shape[-1]).sum(0).cpu()
            sums[index] = squared if sums[index].numel() == 0 else sums[index] + squared

        hidden.register_hook(accumulate)

    return hook
