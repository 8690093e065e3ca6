"""Shared fixtures: tiny random transformers models built from configs in milliseconds."""

from __future__ import annotations

import pytest
import torch
from tiny_models import TINY_LLAMA, TINY_QWEN3_MOE, build_model, build_tokenizer
from transformers import LlamaConfig, Qwen3Config

__all__ = ["TINY_LLAMA", "TINY_QWEN3_MOE", "build_model", "build_tokenizer"]


@pytest.fixture
def tiny_llama():
    """Llama with tied embeddings, 2 blocks, 96-wide (partial groups at group 64)."""
    return build_model(LlamaConfig(**TINY_LLAMA))


@pytest.fixture
def tiny_llama_bf16():
    """The same llama in bfloat16, as checkpoints are usually stored."""
    return build_model(LlamaConfig(**TINY_LLAMA), dtype=torch.bfloat16)


@pytest.fixture
def tiny_qwen3():
    """Qwen3 (q/k norms), untied embeddings."""
    config = Qwen3Config(**{**TINY_LLAMA, "tie_word_embeddings": False})
    return build_model(config)


@pytest.fixture
def tiny_tokenizer():
    """The word-level tokenizer of :func:`build_tokenizer`."""
    return build_tokenizer()


@pytest.fixture
def make_llama():
    """Build a tiny llama with some config fields changed: ``make_llama(intermediate_size=144)``."""
    return lambda **overrides: build_model(LlamaConfig(**{**TINY_LLAMA, **overrides}))


@pytest.fixture
def tiny_qwen3_moe():
    """Qwen3-MoE, 2 blocks of 4 experts (top-2), already unfused into per-expert Linear layers."""
    from transformers import Qwen3MoeConfig

    from autoround.modeling.moe import unfuse_experts

    model = build_model(Qwen3MoeConfig(**TINY_QWEN3_MOE))
    unfuse_experts(model)
    return model


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny shapes gain nothing from threads, and on a busy
    machine each op waits for them. Folders of tiny-shape tests use it automatically."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
