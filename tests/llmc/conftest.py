"""Fixtures for the llm-compressor adapter: a tiny llama saved to disk (``oneshot`` reads the
model's config back from ``name_or_path``) and calibration rows as a tokenized ``Dataset``."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

#: 128 wide (intermediate 256): llm-compressor's W4A16 preset (group 128) divides every layer.
WIDE = {"hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 256}
NSAMPLES, SEQLEN = 8, 32


@pytest.fixture
def llama_dir(tmp_path, make_llama, tiny_tokenizer):
    """A directory holding a tiny fp32 llama (2 blocks, 128 wide) and its tokenizer."""
    path = tmp_path / "fp"
    make_llama(**WIDE).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def load_llama(llama_dir):
    """``load_llama(dtype=torch.float32)``: a fresh copy of the saved tiny llama."""
    return lambda dtype=torch.float32: AutoModelForCausalLM.from_pretrained(llama_dir, dtype=dtype).eval()


@pytest.fixture
def calibration():
    """8 rows of 32 random token ids (no padding), as llm-compressor takes a tokenized set."""
    from datasets import Dataset

    torch.manual_seed(1)
    ids = torch.randint(3, 128, (NSAMPLES, SEQLEN))
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})


@pytest.fixture
def run_oneshot(calibration, tiny_tokenizer):
    """``run_oneshot(model, recipe)``: llm-compressor's ``oneshot`` on the calibration rows."""
    from llmcompressor import oneshot

    def run(model, recipe):
        oneshot(
            model=model,
            dataset=calibration,
            recipe=recipe,
            processor=tiny_tokenizer,
            max_seq_length=SEQLEN,
            num_calibration_samples=NSAMPLES,
            shuffle_calibration_samples=False,
        )
        return model

    return run
