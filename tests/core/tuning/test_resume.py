"""Crash-safe runs: a tuning run killed mid-way and started again produces the same checkpoint
as an uninterrupted run, bit for bit; a resume with different arguments is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autoround import AutoRound
from autoround.io import load_safetensors_dir

WORKER = Path(__file__).with_name("resume_worker.py")


@pytest.fixture
def four_block_model_dir(tmp_path, make_llama):
    path = tmp_path / "model"
    make_llama(num_hidden_layers=4).save_pretrained(path)
    return path


def _worker(model_dir: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(model_dir), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _progress(out: Path) -> Path:
    return out.parent / f".{out.name}.autoround-resume"


def test_a_killed_run_resumes_to_the_uninterrupted_checkpoint(tmp_path, four_block_model_dir) -> None:
    reference = tmp_path / "reference"
    assert _worker(four_block_model_dir, reference).wait(timeout=300) == 0
    assert not _progress(reference).exists(), "progress is removed once the checkpoint is saved"

    out = tmp_path / "resumed"
    proc = _worker(four_block_model_dir, out)
    deadline = time.monotonic() + 300
    while not (_progress(out) / "block-0000.safetensors").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = sorted(p.name for p in _progress(out).glob("block-*.safetensors"))
    assert 1 <= len(done) < 4 and not out.exists(), done

    assert _worker(four_block_model_dir, out).wait(timeout=300) == 0
    mine, theirs = load_safetensors_dir(out), load_safetensors_dir(reference)
    assert sorted(mine) == sorted(theirs)
    for name, tensor in theirs.items():
        assert torch.equal(mine[name], tensor), name
    assert (out / "config.json").read_text() == (reference / "config.json").read_text()
    assert (out / "autoround_report.json").read_text().count('"name"') == 4


def test_resuming_with_different_arguments_is_refused(tmp_path, make_llama) -> None:
    calibration = [torch.arange(i, i + 32) % 128 for i in range(4)]
    out = tmp_path / "out"
    stale = _progress(out)
    stale.mkdir()
    first = AutoRound(
        make_llama(),
        None,
        scheme="W4A16",
        group_size=32,
        dataset=calibration,
        iters=2,
        nsamples=4,
        seqlen=32,
        batch_size=2,
    )
    from autoround.tuning.resume import ResumeStore, fingerprint

    ResumeStore(out, fingerprint(first.calibration(), **first._arguments()))
    second = AutoRound(
        make_llama(),
        None,
        scheme="W4A16",
        group_size=32,
        dataset=calibration,
        iters=3,
        nsamples=4,
        seqlen=32,
        batch_size=2,
    )
    with pytest.raises(ValueError, match=r"different arguments: \['tuning'\]"):
        second.quantize_and_save(out)
