"""How much the language-model loss cares about each hidden dimension at each block's output: the
diagonal of the (empirical) Fisher information of the residual stream, one vector per block.

``fisher[b][i]`` is the sum over calibration tokens of ``(dL / dh_b[t, i])**2``, ``h_b`` being
block ``b``'s output and ``L`` the model's next-token cross-entropy. A perturbation ``delta`` of
that output then costs about ``0.5 * sum_t sum_i fisher[b][i] / tokens * delta[t, i]**2`` of loss
(the second-order term; the first-order one averages out at a trained model), which is what
:mod:`autoround.auto_scheme.sensitivity` weighs each block's output error by. One forward and
backward of the full-precision model per calibration sample, no weight gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm


def block_fisher(
    model: nn.Module, blocks: Sequence[nn.Module], input_ids: torch.Tensor, progress: bool = True
) -> list[torch.Tensor]:
    """Per block, the summed squared loss gradient of every output dimension (float32, CPU)."""
    sums = [torch.zeros(0) for _ in blocks]
    handles = [block.register_forward_hook(_collector(sums, i)) for i, block in enumerate(blocks)]
    embeddings = cast(Any, model).get_input_embeddings()
    handles.append(embeddings.register_forward_hook(lambda _m, _a, out: out.requires_grad_(True)))
    flags = [(p, p.requires_grad) for p in model.parameters()]
    device = next(model.parameters()).device
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for row in tqdm(input_ids, desc="AutoScheme loss gradients", unit="sample", disable=not progress):
            ids = row.unsqueeze(0).to(device)
            with torch.enable_grad():
                out = model(input_ids=ids, labels=ids, use_cache=False)
                (out.loss * (ids.shape[1] - 1)).backward()
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
    return sums


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
