"""Fixtures shared by the lm-eval tests of tests/core/eval and tests/core/cli: the offline task
folder, a tiny quantized checkpoint, and an lm-eval that indexes only local tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

import autoround
from autoround.eval import lm_eval_tasks


@pytest.fixture
def lm_eval_tasks_dir() -> Path:
    """The offline lm-eval tasks: ``wikitext_local`` (word perplexity over the shipped wikitext-2
    head) and ``cloze_local`` (multiple choice over public-domain sentences)."""
    return Path(__file__).resolve().parents[1] / "fixtures" / "lm_eval_tasks"


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_llama, tiny_tokenizer) -> Path:
    """A W4A16 autoround checkpoint of the tiny llama, with its tokenizer."""
    qm = autoround.quantize(tiny_llama, "W4A16", progress=False, tokenizer=tiny_tokenizer)
    return autoround.save(qm, tmp_path / "tiny-w4a16")


@pytest.fixture
def no_builtin_tasks(monkeypatch):
    """Index only --include_path, never lm-eval's ~15,000 built-in task files (about 20 s): for
    tests whose tasks are all local, including the ones about tasks that are not found."""
    build = lm_eval_tasks._task_manager
    monkeypatch.setattr(
        lm_eval_tasks,
        "_task_manager",
        lambda paths, metadata, include_defaults: build(paths, metadata, include_defaults=False),
    )
