"""Fixtures of the model-free tests: tiny checkpoints on disk, the model-based reference, and a
guard that fails any attempt to build a transformers model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Every test here runs with the shared ``one_thread`` fixture."""


@pytest.fixture
def save_checkpoint(tmp_path, tiny_tokenizer):
    """``save_checkpoint(model, name, **save_pretrained_kwargs)``: the model and the tiny
    tokenizer saved under ``tmp_path / name``, as a user's checkpoint directory."""

    def save(model: torch.nn.Module, name: str = "src", **kwargs) -> Path:
        path = tmp_path / name
        model.save_pretrained(path, **kwargs)
        tiny_tokenizer.save_pretrained(path)
        return path

    return save


@pytest.fixture
def forbid_model_building(monkeypatch):
    """Call it to make building any transformers model raise from then on."""

    def forbid() -> None:
        def refuse(*args, **kwargs):
            raise AssertionError("a transformers model was built")

        monkeypatch.setattr(transformers.PreTrainedModel, "__init__", refuse)
        for auto in (transformers.AutoModel, transformers.AutoModelForCausalLM):
            monkeypatch.setattr(auto, "from_pretrained", refuse)
            monkeypatch.setattr(auto, "from_config", refuse)

    return forbid
