"""load_quantized: packed layers give the dense dequantized model's logits; bad checkpoints named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from autoround import quantize, save
from autoround.errors import CheckpointError
from autoround.loading import load_dense, load_quantized
from autoround.nn import QuantLinear

INTEL = Path(__file__).parents[2] / "fixtures" / "intel" / "tiny_llama_w4a16_g32"
TOLERANCE = {"torch": 1e-5, "cpu": 1e-4}


def _saved(tmp_path, model, scheme="W4A16", **overrides) -> Path:
    return save(quantize(model, scheme, progress=False, **overrides), tmp_path / "ckpt")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _ids() -> torch.Tensor:
    return torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_logits_and_greedy_text_match_the_dense_model(tmp_path, tiny_llama, backend) -> None:
    path = _saved(tmp_path, tiny_llama, "W4A16", group_size=64)  # 96 inputs: a partial group
    dense, packed = load_dense(path), load_quantized(path, backend=backend)
    ids = _ids()
    with torch.no_grad():
        assert _rel(packed(ids).logits, dense(ids).logits) < TOLERANCE[backend]
    out = packed.generate(ids[:1], max_new_tokens=6, do_sample=False)
    assert out.shape == (1, 15)
    if backend == "torch":
        assert torch.equal(out, dense.generate(ids[:1], max_new_tokens=6, do_sample=False))


@pytest.mark.parametrize(
    ("scheme", "overrides"),
    [
        ("W2A16G64", {}),
        ("W3A16", {"group_size": 32}),
        ("W8A16", {"group_size": -1}),
        ("W4A16", {"sym": False}),
    ],
)
def test_other_schemes_load_exactly(tmp_path, tiny_llama, scheme, overrides) -> None:
    path = _saved(tmp_path, tiny_llama, scheme, **overrides)
    dense, packed = load_dense(path), load_quantized(path, backend="torch")
    with torch.no_grad():
        assert _rel(packed(_ids()).logits, dense(_ids()).logits) < 1e-5


def test_quantized_layers_hold_no_dense_weight_and_ties_stay(tmp_path, tiny_llama) -> None:
    packed = load_quantized(_saved(tmp_path, tiny_llama))
    layers = [m for m in packed.modules() if isinstance(m, QuantLinear)]
    assert len(layers) == 14 and not any(hasattr(m, "weight") for m in layers)
    assert all(m.backend == "cpu" and m.backend_state is not None for m in layers)
    assert packed.lm_head.weight is packed.model.embed_tokens.weight


def test_intel_checkpoint_loads(tmp_path) -> None:
    dense = load_dense(INTEL, dtype=torch.float32)
    ids = torch.randint(0, 288, (1, 7), generator=torch.Generator().manual_seed(0))
    for backend, tolerance in TOLERANCE.items():
        packed = load_quantized(INTEL, dtype=torch.float32, backend=backend)
        with torch.no_grad():
            assert _rel(packed(ids).logits, dense(ids).logits) < tolerance, backend


def test_packed_shapes_that_disagree_with_the_config_are_named(tmp_path, tiny_llama) -> None:
    path = _saved(tmp_path, tiny_llama)
    tensors = load_file(path / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.scales"
    tensors[name] = tensors[name][:, :-16].contiguous()
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"up_proj.scales has shape \(1, 144\).*need \(1, 160\)"):
        load_quantized(path)


def test_a_missing_tensor_is_named(tmp_path, tiny_llama) -> None:
    path = _saved(tmp_path, tiny_llama)
    tensors = load_file(path / "model.safetensors")
    del tensors["model.layers.0.self_attn.o_proj.qzeros"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"o_proj\.qzeros"):
        load_quantized(path)


def test_unknown_backend_is_refused(tmp_path, tiny_llama) -> None:
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        load_quantized(_saved(tmp_path, tiny_llama), backend="gpu")
