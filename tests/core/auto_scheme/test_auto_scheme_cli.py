"""``--avg_bits`` / ``--options`` / ``--ignore_scale_zp_bits`` on the command line: a round trip to
a mixed checkpoint, and each bad combination refused in one line before the model loads."""

from __future__ import annotations

import re

import pytest

from autoround.cli.commands import main, main_rtn
from autoround.formats import checkpoint_spec


@pytest.fixture
def model_dir(tmp_path, tiny_llama, tiny_tokenizer):
    path = tmp_path / "tiny"
    tiny_llama.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def test_the_command_line_writes_a_mixed_checkpoint_within_the_budget(tmp_path, model_dir, capsys) -> None:
    out = tmp_path / "out"
    args = ["--model", str(model_dir), "--avg_bits", "3", "--options", "W2A16G32", "W4A16G32,W8A16G32"]
    assert main_rtn([*args, "--dataset", "wikitext2:concat", "--output_dir", str(out), "-q"]) == 0
    assert "layers to AUTO3BITS with rtn" in capsys.readouterr().out
    spec = checkpoint_spec(out)
    names = [f"model.layers.{b}.{p}" for b in (0, 1) for p in ("self_attn.q_proj", "mlp.down_proj")]
    assert len({spec.scheme_for(n).bits for n in names}) > 1


def test_ignore_scale_zp_bits_allows_a_budget_at_the_weight_bits(tmp_path, model_dir) -> None:
    out = tmp_path / "out"
    args = ["--model", str(model_dir), "--avg_bits", "2", "--options", "W2A16G32,W4A16G32"]
    flags = ["--ignore_scale_zp_bits", "--dataset", "wikitext2:concat", "--output_dir", str(out), "-q"]
    assert main_rtn([*args, *flags]) == 0
    assert {checkpoint_spec(out).scheme_for("model.layers.0.mlp.up_proj").bits} == {2}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--avg_bits", "3"], "--avg_bits needs --options"),
        (["--options", "W2A16,W4A16"], "--options needs --avg_bits"),
        (["--ignore_scale_zp_bits"], "--ignore_scale_zp_bits and --shared_layers belong to AutoScheme"),
        (["--avg_bits", "3", "--options", "W2A16,W4A16", "--scheme", "W4A16"], "--scheme set one scheme"),
        (["--avg_bits", "3", "--options", "W2A16,W4A16", "--bits", "4"], "--bits set one scheme"),
        (["--avg_bits", "3", "--options", "W2A16,W9A16"], "unknown AutoScheme option 'W9A16'"),
        (["--avg_bits", "0", "--options", "W2A16,W4A16"], r"avg_bits=0\.0 is outside \(0, 16\]"),
        (
            ["--avg_bits", "3", "--options", "W2A16,W4A16", "--model_free"],
            "--model_free never loads the model",
        ),
        (
            ["--avg_bits", "5", "--options", "GGUF:Q4_K_M,W8A16"],
            "AutoScheme option GGUF:Q4_K_M: .*'auto_round'",
        ),
    ],
)
def test_bad_flags_are_refused_in_one_line_before_the_model_loads(tmp_path, capsys, flags, message) -> None:
    missing = tmp_path / "no-model"  # loading it would fail with another message
    assert main(["--model", str(missing), *flags, "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "o").exists()


def test_shared_layers_flags_follow_intels_grouping() -> None:
    from autoround.cli.tuning_args import _shared_groups

    assert _shared_groups([["q_proj", "k_proj"]]) == [["q_proj", "k_proj"]]
    assert _shared_groups([["q_proj,k_proj", "up_proj,gate_proj"], ["o_proj"]]) == [
        ["q_proj", "k_proj"],
        ["up_proj", "gate_proj"],
        ["o_proj"],
    ]
    assert _shared_groups(None) is None
