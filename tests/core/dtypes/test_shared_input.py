"""Layers reading one input share one activation quantize-dequantize: the memo hands the last
result to the next caller with the very same, unchanged tensor, the same key and grad mode, and
recomputes otherwise; shared in SignRound's tuning forward, the gradient to the input is what
separate straight-through copies give (the sum of the readers' gradients)."""

from __future__ import annotations

import torch

from autoround.algorithms.act_tuning import input_quantizer
from autoround.dtypes.shared_input import LastInput
from autoround.nn.act_hooks import attach_act_quant
from autoround.schemes import parse_scheme


class Counting:
    """``x * 2``, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * 2


def test_the_same_input_with_the_same_key_is_quantized_once() -> None:
    memo, compute, x = LastInput(), Counting(), torch.randn(4, 8)
    first = memo.get(x, "k", compute)
    assert memo.get(x, "k", compute) is first
    assert compute.calls == 1


def test_another_tensor_with_equal_values_another_key_or_grad_mode_is_recomputed() -> None:
    memo, compute, x = LastInput(), Counting(), torch.randn(4, 8)
    memo.get(x, "k", compute)
    memo.get(x.clone(), "k", compute)  # equal values, another tensor: not known to be the same
    memo.get(x, "other", compute)
    with torch.no_grad():
        memo.get(x, "other", compute)
    assert compute.calls == 4


def test_an_input_changed_in_place_is_recomputed() -> None:
    memo, compute, x = LastInput(), Counting(), torch.randn(4, 8)
    memo.get(x, "k", compute)
    x.add_(1.0)
    assert torch.equal(memo.get(x, "k", compute), x * 2)
    assert compute.calls == 2


def test_a_freed_input_is_not_mistaken_for_a_new_one_at_its_address() -> None:
    memo, compute = LastInput(), Counting()
    memo.get(torch.randn(4, 8), "k", compute)  # freed at once
    y = torch.randn(4, 8)
    assert torch.equal(memo.get(y, "k", compute), y * 2)
    assert compute.calls == 2


def test_shared_in_tuning_the_input_gradient_is_the_sum_over_the_readers() -> None:
    quantize = input_quantizer(parse_scheme("MXFP4"))
    assert quantize is not None
    x = torch.randn(2, 64, requires_grad=True)
    a, b = torch.randn(2, 64), torch.randn(2, 64)
    q1, q2 = quantize(x), quantize(x)
    assert q1 is q2  # one node for both readers
    (q1 * a + q2 * b).sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad, a + b)  # straight through, summed as over two copies


def test_inference_mode_tensors_are_quantized_every_time() -> None:
    # they have no version counter, so a change in place could not be seen: no sharing
    memo, compute = LastInput(), Counting()
    with torch.inference_mode():
        x = torch.randn(4, 8)
        memo.get(x, "k", compute)
        x.add_(1.0)
        assert torch.equal(memo.get(x, "k", compute), x * 2)
    assert compute.calls == 2


def test_hooked_layers_run_under_inference_mode(tiny_llama) -> None:
    layers = {
        n: parse_scheme("MXFP4") for n, m in tiny_llama.named_modules() if isinstance(m, torch.nn.Linear)
    }
    layers.pop("lm_head")
    attach_act_quant(tiny_llama, layers)
    ids = torch.tensor([[1, 5, 9, 3, 7, 2]])
    with torch.no_grad():
        expected = tiny_llama(ids).logits
    with torch.inference_mode():
        assert torch.equal(tiny_llama(ids).logits, expected)
