"""``--format`` with a GGUF recipe from the command line (the rule of autoround.formats.combine):
beside integer formats, one run writes them all; alone, the recipe picks its scheme when
``--scheme`` is not given; a conflicting ``--scheme`` is refused before the model loads."""

from __future__ import annotations

import json
import logging

import pytest
from gguf import GGUFReader
from tiny_gguf import bpe_tokenizer, gguf_model

import autoround.runner as runner
from autoround.cli import commands
from autoround.cli.commands import main_rtn
from autoround.formats import gguf_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def gguf_model_dir(tmp_path):
    """A llama llama.cpp's K-quants fit (256 wide) with a byte-level BPE tokenizer, as --model."""
    path = tmp_path / "tiny-gguf"
    gguf_model().save_pretrained(path)
    bpe_tokenizer().save_pretrained(path)
    return path


def _types(directory) -> dict[str, str]:
    return {t.name: t.tensor_type.name.lower() for t in GGUFReader(gguf_file(directory)).tensors}


def test_three_formats_from_one_run(tmp_path, gguf_model_dir, monkeypatch, capsys) -> None:
    calls: list[int] = []
    execute = runner.execute
    monkeypatch.setattr(runner, "execute", lambda *a, **k: calls.append(1) or execute(*a, **k))
    out = tmp_path / "o"
    args = ["--model", str(gguf_model_dir), "--output_dir", str(out), "-q"]
    assert main_rtn([*args, "--format", "auto_round,auto_gptq,gguf:q4_k_m"]) == 0
    assert len(calls) == 1
    printed = capsys.readouterr().out
    assert "layers to W4A16 with rtn and saved the auto_round, auto_gptq, gguf:q4_k_m checkpoints" in printed
    assert sorted(p.name for p in out.iterdir()) == ["auto-gptq", "auto-round", "gguf-q4-k-m"]
    config = json.loads((out / "auto-gptq" / "config.json").read_text())["quantization_config"]
    assert (config["quant_method"], config["bits"], config["group_size"], config["sym"]) == (
        "gptq",
        4,
        128,
        True,
    )
    types = _types(out / "gguf-q4-k-m")
    assert (types["blk.0.ffn_down.weight"], types["blk.1.ffn_down.weight"]) == ("q4_k", "q6_k")


def test_a_recipe_alone_picks_its_scheme(tmp_path, gguf_model_dir, capsys, caplog) -> None:
    out = tmp_path / "o"
    with caplog.at_level(logging.INFO, logger="autoround.formats.combine"):
        code = main_rtn(["--model", str(gguf_model_dir), "--output_dir", str(out), "--format", "gguf:q4_k_m"])
    assert code == 0
    assert "format gguf:q4_k_m alone: quantizing with its scheme GGUF:Q4_K_M (no scheme given)" in caplog.text
    assert "layers to GGUF:Q4_K_M with rtn" in capsys.readouterr().out
    assert _types(out)["blk.0.attn_q.weight"] == "q4_k"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--scheme", "W4A16", "--format", "gguf:q4_k_m"],
            "scheme 'W4A16' conflicts with format gguf:q4_k_m, which quantizes with llama.cpp's q4_k "
            "blocks: leave the scheme out (GGUF:Q4_K_M is used) or pass GGUF:Q4_K_M",
        ),
        (["--bits", "8", "--format", "gguf:q8_0"], "'W4A16' (the default) with bits=8 conflicts"),
        (
            ["--scheme", "gguf:q4_k_m", "--format", "auto_round,gguf:q4_k_m"],
            "'gguf:q4_k_m' is a GGUF scheme, which the formats beside gguf:q4_k_m (auto_round) cannot store",
        ),
        (["--format", "gguf:q4_k_m,gguf:q4_0"], "names 2 GGUF recipes (gguf:q4_k_m, gguf:q4_0)"),
    ],
)
def test_refused_before_the_model_loads(
    flags, message, tmp_path, gguf_model_dir, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(commands, "load_model", lambda args: pytest.fail("the model must not load"))
    assert main_rtn(["--model", str(gguf_model_dir), "--output_dir", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "o").exists()
