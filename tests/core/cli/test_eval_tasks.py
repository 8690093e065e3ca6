"""``autoround eval --tasks`` and ``autoround --eval --tasks``: lm-eval's numbers, its table printed
and its results written as JSON in the checkpoint; every refusal one line, before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoround.cli.commands import main, main_rtn
from autoround.eval.lm_eval_runner import LmEvalSettings, evaluate, prepare

TASKS = "wikitext_local,cloze_local"


def _table(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def _one_error_line(err: str, prog: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_autoround_eval_gives_lm_evals_own_numbers(
    tiny_checkpoint, lm_eval_tasks_dir, tmp_path, capsys
) -> None:
    """The same checkpoint and tasks through ``lm_eval --model hf`` (run by the documented wrapper
    ``autoround-lm-eval``, which imports autoround_hf first): the same table, digit for digit, and
    the same results in the JSON files."""
    common = ["--tasks", TASKS, "--include_path", str(lm_eval_tasks_dir), "--limit", "3"]
    assert main(["eval", "--model", str(tiny_checkpoint), *common]) == 0
    ours_out = capsys.readouterr().out
    ours = json.loads((tiny_checkpoint / "lm_eval_results_hf.json").read_text())

    wrapper = Path(sys.executable).parent / "autoround-lm-eval"
    args = ["--model", "hf", "--model_args", f"pretrained={tiny_checkpoint}", "--device", "cpu"]
    cli = subprocess.run(
        [str(wrapper), *args, *common, "--output_path", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    theirs = json.loads(next((tmp_path / "cli").rglob("results_*.json")).read_text())

    assert _table(ours_out) == _table(cli.stdout) and len(_table(ours_out)) == 7
    for key in ("results", "versions", "n-shot", "higher_is_better", "n-samples"):
        assert ours[key] == theirs[key], key
    assert ours["results"]["cloze_local"]["sample_len"] == 3


def test_quantize_then_evaluate_the_checkpoint_and_the_16_bit_model(
    tiny_model_dir, lm_eval_tasks_dir, tmp_path, capsys
) -> None:
    output = tmp_path / "w4"
    evals = ["--tasks", "cloze_local", "--include_path", str(lm_eval_tasks_dir), "--limit", "4"]
    argv = ["--model", str(tiny_model_dir), "--output_dir", str(output), "--eval", "--eval_baseline", *evals]
    assert main_rtn(argv) == 0
    out = capsys.readouterr().out
    assert out.index("lm-eval (hf backend) on the quantized checkpoint") < out.index("on the 16-bit model")
    assert len(_table(out)) == 2 * 4  # two tables: header, rule, acc, acc_norm
    quantized = json.loads((output / "lm_eval_results_hf.json").read_text())
    baseline = json.loads((output / "lm_eval_results_hf_16bit.json").read_text())
    assert quantized["config"]["model_args"]["pretrained"] == str(output)
    assert baseline["config"]["model_args"]["pretrained"] == str(tiny_model_dir)
    settings = LmEvalSettings(("cloze_local",), include_paths=(lm_eval_tasks_dir,), limit=4)
    assert baseline["results"] == json.loads(
        json.dumps(evaluate(prepare(settings, tiny_model_dir))["results"])
    )


def test_tasks_and_perplexity_together(tiny_checkpoint, lm_eval_tasks_dir, capsys) -> None:
    ppl = ["--eval_windows", "1", "--eval_seqlen", "16"]
    tasks = ["--tasks", "cloze_local", "--include_path", str(lm_eval_tasks_dir), "--limit", "2"]
    assert main(["eval", "--model", str(tiny_checkpoint), *tasks, "--eval_ppl", *ppl]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "|cloze_local" in out


#: Refused before anything loads or is written: (command, extra arguments, what the error names).
REFUSED = {
    "tasks without --eval": ("quantize", ["--tasks", "cloze_local"], "only with --eval"),
    "--eval without tasks": ("quantize", ["--eval"], "--eval need --tasks"),
    "--limit without tasks": ("eval", ["--limit", "2"], "--limit needs --tasks"),
    "--include_path without tasks": ("eval", ["--include_path", "x"], "--include_path needs --tasks"),
    "vllm args on hf": ("eval", ["--tasks", "cloze_local", "--vllm_args", "a=1"], "--vllm_args is for"),
    "batch size 0": ("eval", ["--tasks", "cloze_local", "--eval_bs", "0"], "--eval_bs must be"),
    "missing task": ("quantize", ["--eval", "--tasks", "cloze_local,nosuch"], "task 'nosuch' not found"),
}


@pytest.mark.parametrize("command, extra, named", REFUSED.values(), ids=REFUSED)
def test_bad_evaluation_flags_are_refused_before_any_work(
    command, extra, named, tiny_model_dir, lm_eval_tasks_dir, tmp_path, capsys, no_builtin_tasks
) -> None:
    output = tmp_path / "out"
    if command == "quantize":
        argv = [
            "--model",
            str(tiny_model_dir),
            "--output_dir",
            str(output),
            "--include_path",
            str(lm_eval_tasks_dir),
        ]
        code, prog = main_rtn([*argv, *extra]), "autoround-rtn"
    else:
        code, prog = main(["eval", "--model", str(tiny_model_dir), *extra]), "autoround eval"
    assert code == 2
    captured = capsys.readouterr()
    assert named in _one_error_line(captured.err, prog)
    assert not output.exists() and "perplexity" not in captured.out


def test_lm_eval_not_installed_is_refused_before_quantizing(
    tiny_model_dir, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    output = tmp_path / "out"
    assert (
        main_rtn(["--model", str(tiny_model_dir), "--output_dir", str(output), "--eval", "--tasks", "x"]) == 2
    )
    error = _one_error_line(capsys.readouterr().err, "autoround-rtn")
    assert "lm-eval, which is not installed" in error and "pip install 'autoround-core[eval]'" in error
    assert not output.exists()


def test_a_task_lm_eval_does_not_know_is_named_with_close_names(tiny_checkpoint, capsys) -> None:
    """lm-eval's whole task index (about 20 s to build): a misspelt task gets its close names."""
    assert main(["eval", "--model", str(tiny_checkpoint), "--tasks", "wikitxt"]) == 2
    error = _one_error_line(capsys.readouterr().err, "autoround eval")
    assert "lm-eval task 'wikitxt' not found" in error and "close names: wikitext" in error
