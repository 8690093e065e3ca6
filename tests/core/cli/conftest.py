"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_llama, tiny_tokenizer):
    """The tiny llama and its tokenizer saved as a model directory, as a user passes --model."""
    path = tmp_path / "tiny"
    tiny_llama.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path
