"""BlockActivations: two activation buffers advanced in place, block by block."""

from __future__ import annotations

import pytest
import torch

from autoround.algorithms.block_activations import BlockActivations, cache_dtype, reference_autocast
from autoround.modeling.capture import block_output, capture_block_inputs


def _reference_outputs(block: torch.nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([block_output(block, hidden[i : i + 1], kwargs) for i in range(len(hidden))])


@pytest.fixture
def first_block_inputs(make_llama):
    model = make_llama().float()
    ids = torch.randint(0, 128, (5, 12), generator=torch.Generator().manual_seed(0))
    captured = capture_block_inputs(model, model.model.layers[0], ids, torch.device("cpu"), False)
    return model, captured


def test_the_fp_path_becomes_each_blocks_full_precision_output(first_block_inputs) -> None:
    model, captured = first_block_inputs
    expected = captured.hidden.clone()
    acts = BlockActivations.start(captured.hidden.clone(), True, torch.float32, torch.device("cpu"))
    for block in model.model.layers:
        expected = _reference_outputs(block, expected, captured.kwargs)
        acts.advance_fp(block, captured.kwargs, batch_size=2)
        torch.testing.assert_close(acts.fp, expected, rtol=1e-5, atol=1e-6)


def test_with_quanted_input_the_tuned_path_runs_the_blocks_it_is_given(first_block_inputs) -> None:
    model, captured = first_block_inputs
    start = captured.hidden.clone()
    acts = BlockActivations.start(captured.hidden, True, torch.float32, torch.device("cpu"))
    block = model.model.layers[0]
    acts.advance_fp(block, captured.kwargs, batch_size=3)
    torch.testing.assert_close(acts.tuned, start)  # untouched until the tuned block runs
    acts.advance_tuned(block, captured.kwargs, batch_size=3)
    torch.testing.assert_close(
        acts.tuned, _reference_outputs(block, start, captured.kwargs), rtol=1e-5, atol=1e-6
    )


def test_without_quanted_input_each_block_is_tuned_on_full_precision_inputs(first_block_inputs) -> None:
    model, captured = first_block_inputs
    acts = BlockActivations.start(captured.hidden.clone(), False, torch.float32, torch.device("cpu"))
    for block in model.model.layers:
        inputs = acts.fp.clone()
        acts.advance_fp(block, captured.kwargs, batch_size=2)
        torch.testing.assert_close(acts.tuned, inputs)
        acts.advance_tuned(block, captured.kwargs, batch_size=2)  # nothing to carry forward
        torch.testing.assert_close(acts.tuned, inputs)


def test_the_buffers_are_stored_in_the_cache_dtype_and_two_distinct_tensors(first_block_inputs) -> None:
    _, captured = first_block_inputs
    acts = BlockActivations.start(captured.hidden, True, torch.bfloat16, torch.device("cpu"))
    assert acts.fp.dtype == acts.tuned.dtype == torch.bfloat16
    assert acts.fp.data_ptr() != acts.tuned.data_ptr()
    assert torch.equal(acts.fp, captured.hidden.to(torch.bfloat16))


def test_capture_writes_into_one_tensor_of_the_asked_dtype(make_llama) -> None:
    model = make_llama().float()
    ids = torch.randint(0, 128, (3, 8), generator=torch.Generator().manual_seed(1))
    plain = capture_block_inputs(model, model.model.layers[0], ids, torch.device("cpu"), False)
    cast = capture_block_inputs(model, model.model.layers[0], ids, torch.device("cpu"), False, torch.bfloat16)
    assert plain.hidden.shape == (3, 8, model.config.hidden_size)
    assert cast.hidden.dtype == torch.bfloat16
    assert torch.equal(cast.hidden, plain.hidden.to(torch.bfloat16))
    embedded = model.model.embed_tokens(ids)  # the first block receives the embeddings
    torch.testing.assert_close(plain.hidden, embedded)


@pytest.mark.parametrize(
    ("model_dtype", "device", "expected"),
    [
        (torch.bfloat16, "cpu", torch.float32),  # CPU results stay float32's
        (torch.float32, "cpu", torch.float32),
        (torch.bfloat16, "cuda", torch.bfloat16),  # GPU memory: the model's 16-bit dtype
        (torch.float16, "cuda", torch.float16),
        (torch.float32, "cuda", torch.float32),
    ],
)
def test_cache_dtype(model_dtype: torch.dtype, device: str, expected: torch.dtype) -> None:
    assert cache_dtype(model_dtype, device) == expected


@pytest.mark.parametrize(
    ("amp_dtype", "device", "expected"),
    [
        (torch.bfloat16, "cpu", None),  # CPU targets stay float32
        (None, "cpu", None),
        (torch.bfloat16, "cuda", torch.bfloat16),  # no float32 math-kernel attention on CUDA
        (None, "cuda", None),  # amp off: float32 everywhere
    ],
)
def test_reference_forwards_autocast_like_tuning_on_accelerators_only(amp_dtype, device, expected) -> None:
    assert reference_autocast(amp_dtype, device) == expected


def test_reference_forwards_under_autocast_are_bf16_matrix_products(first_block_inputs) -> None:
    model, captured = first_block_inputs
    block = model.model.layers[0]
    plain = captured.hidden.clone()
    autocast = captured.hidden.clone()
    BlockActivations.start(plain, True, torch.float32, torch.device("cpu")).advance_fp(
        block, captured.kwargs, 2
    )
    acts = BlockActivations.start(autocast, True, torch.float32, torch.device("cpu"), torch.bfloat16)
    acts.advance_fp(block, captured.kwargs, 2)
    reference = _reference_outputs(block, captured.hidden, captured.kwargs)
    assert acts.fp.dtype == torch.float32
    torch.testing.assert_close(acts.fp, reference, rtol=0.05, atol=0.05)  # bf16 products: close
    assert not torch.equal(acts.fp, reference)  # but not float32's
