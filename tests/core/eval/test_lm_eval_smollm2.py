"""The real model: SmolLM2 quantized to W4A16 and evaluated on the offline tasks in one command
(``autoround-rtn ... --eval --tasks``) gives, digit for digit, what lm-eval's own CLI
(``autoround-lm-eval --model hf``, i.e. ``lm_eval`` with autoround_hf imported) gives on the saved
checkpoint. Slow tier (about 2 minutes on 2 cores); named in .ci/run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoround.cli.commands import main_rtn

pytestmark = pytest.mark.slow


def _table(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_smollm2_w4a16_quantize_and_evaluate_gives_lm_evals_own_numbers(
    tmp_path, lm_eval_tasks_dir, capsys
) -> None:
    output = tmp_path / "smollm2-w4a16"
    tasks = ["--tasks", "wikitext_local,cloze_local", "--include_path", str(lm_eval_tasks_dir)]
    tasks += ["--limit", "2"]  # two articles of wikitext (about 9,000 tokens), two cloze items
    assert main_rtn(["--model", "smollm2", "--output_dir", str(output), "--eval", *tasks, "-q"]) == 0
    ours_out = capsys.readouterr().out
    ours = json.loads((output / "lm_eval_results_hf.json").read_text())

    wrapper = Path(sys.executable).parent / "autoround-lm-eval"
    args = ["--model", "hf", "--model_args", f"pretrained={output}", "--device", "cpu"]
    cli = subprocess.run(
        [str(wrapper), *args, *tasks, "--output_path", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    theirs = json.loads(next((tmp_path / "cli").rglob("results_*.json")).read_text())

    assert _table(ours_out) == _table(cli.stdout) and len(_table(ours_out)) == 7, ours_out
    assert ours["results"] == theirs["results"]
    wikitext, cloze = ours["results"]["wikitext_local"], ours["results"]["cloze_local"]
    assert 20 < wikitext["word_perplexity,none"] < 200  # a working 4-bit model, not noise
    assert cloze["acc,none"] >= 0.5 and cloze["sample_len"] == 2
