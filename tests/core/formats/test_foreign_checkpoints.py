"""Core's loaders read GPTQ and AWQ checkpoints (Intel's exports of one tiny model) through the
same spec path as autoround-hf, and agree with independent dequantizations."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from autoround.formats import awq_layout
from autoround.loading import load_dense, load_quantized
from autoround.nn import QuantLinear

FIXTURES = Path(__file__).parents[2] / "fixtures" / "intel"
IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4]])


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.float()


def _awq_reference() -> torch.nn.Module:
    """The dense fixture, each quantized weight dequantized straight from the AWQ tensors."""
    tensors = load_file(FIXTURES / "tiny_llama_awq_w4_g32" / "model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny_llama_dense", dtype=torch.float32)
    for name, module in model.named_modules():
        if f"{name}.qweight" in tensors:
            codes = awq_layout.unpack_awq(tensors[f"{name}.qweight"]).float()  # (in, out)
            zeros = awq_layout.unpack_awq(tensors[f"{name}.qzeros"]).float()  # (groups, out)
            scales = tensors[f"{name}.scales"].float()
            g = codes.shape[0] // zeros.shape[0]
            module.weight.data = (
                (codes - zeros.repeat_interleave(g, 0)) * scales.repeat_interleave(g, 0)
            ).t()
    return model


def test_a_gptq_checkpoint_loads_packed_like_intels_auto_round_one() -> None:
    model = load_quantized(FIXTURES / "tiny_llama_gptq_w4_g32", dtype=torch.float32, backend="torch")
    assert any(isinstance(m, QuantLinear) for m in model.modules())
    reference = load_dense(FIXTURES / "tiny_llama_w4a16_g32", dtype=torch.float32)
    torch.testing.assert_close(_logits(model), _logits(reference), atol=1e-5, rtol=0)


def test_a_gptq_checkpoint_loads_dense_like_intels_auto_round_one() -> None:
    model = load_dense(FIXTURES / "tiny_llama_gptq_w4_g32", dtype=torch.float32)
    reference = load_dense(FIXTURES / "tiny_llama_w4a16_g32", dtype=torch.float32)
    torch.testing.assert_close(_logits(model), _logits(reference), atol=1e-5, rtol=0)


def test_an_awq_checkpoint_loads_packed_and_dense_like_an_independent_dequantization() -> None:
    reference = _logits(_awq_reference())
    packed = load_quantized(FIXTURES / "tiny_llama_awq_w4_g32", dtype=torch.float32, backend="torch")
    torch.testing.assert_close(_logits(packed), reference, atol=1e-5, rtol=0)
    dense = load_dense(FIXTURES / "tiny_llama_awq_w4_g32", dtype=torch.float32)
    torch.testing.assert_close(_logits(dense), reference, atol=1e-5, rtol=0)
