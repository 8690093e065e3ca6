"""``autoround eval`` evaluates a checkpoint the way it is stored, and says which way.

Issue case: a checkpoint whose config.json lost its ``quantization_config`` used to be loaded as
a dense model, its packed layers' weights initialised at random, and its perplexity reported
(exit 0, another number each run).
"""

from __future__ import annotations

import json

import pytest

import autoround
from autoround.cli.commands import main

EVAL = ["--eval_windows", "1", "--eval_seqlen", "16"]


@pytest.fixture
def checkpoint(tmp_path, tiny_llama, tiny_tokenizer):
    qm = autoround.quantize(tiny_llama, "W4A16", progress=False, tokenizer=tiny_tokenizer)
    return autoround.save(qm, tmp_path / "ckpt")


def test_a_quantized_checkpoint_is_evaluated_as_quantized(checkpoint, capsys) -> None:
    assert main(["eval", "--model", str(checkpoint), *EVAL]) == 0
    assert f"evaluating {checkpoint} as a quantized auto-round checkpoint" in capsys.readouterr().out


def test_packed_tensors_without_quantization_config_are_refused_not_run_on_random_weights(
    checkpoint, capsys
) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    del config["quantization_config"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    assert main(["eval", "--model", str(checkpoint), *EVAL]) == 2
    captured = capsys.readouterr()
    assert "perplexity" not in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("autoround eval: error:")]
    assert len(errors) == 1 and "qweight" in errors[0], captured.err


def test_a_dense_model_is_evaluated_as_dense(tmp_path, tiny_llama, tiny_tokenizer, capsys) -> None:
    tiny_llama.save_pretrained(tmp_path / "dense")
    tiny_tokenizer.save_pretrained(tmp_path / "dense")
    assert main(["eval", "--model", str(tmp_path / "dense"), *EVAL]) == 0
    assert "as a dense model" in capsys.readouterr().out
