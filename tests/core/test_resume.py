"""Crash-safe runs: a tuning run killed mid-way and started again produces the same checkpoint
as an uninterrupted run, bit for bit; a resume that would mix blocks of two different runs (other
arguments, weights, tokenizer or data), a resume folder that cannot be read, and a second run into
the same output are refused, each naming the folder and the command to clear it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

from autoround import AutoRound
from autoround import resume as resume_module
from autoround.errors import ResumeError
from autoround.io import load_safetensors_dir
from autoround.resume import ResumeStore, fingerprint
from autoround.runner import fingerprinted_arguments

WORKER = Path(__file__).with_name("resume_worker.py")
CALIBRATION = [torch.arange(i, i + 32) % 128 for i in range(4)]


class Killed(BaseException):
    """Stands in for SIGKILL inside the test process (BaseException: nothing may catch it)."""


@pytest.fixture
def four_block_model_dir(tmp_path, make_llama):
    path = tmp_path / "model"
    make_llama(num_hidden_layers=4).save_pretrained(path)
    return path


@pytest.fixture
def model_dir(tmp_path, make_llama):
    """A saved three-block llama, loaded afresh by every run (tuning changes the model in place)."""
    path = tmp_path / "input-model"
    make_llama(num_hidden_layers=3).save_pretrained(path)
    return path


def _autoround(model_dir: Path, tokenizer: Any = None, **overrides: Any) -> AutoRound:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    arguments = {"scheme": "W4A16", "group_size": 32, "iters": 2, "nsamples": 4, "seqlen": 32}
    arguments |= {"dataset": CALIBRATION, "batch_size": 2, **overrides}
    return AutoRound(model, tokenizer, **arguments)


def _killed_after_block(monkeypatch, model_dir: Path, out: Path, index: int, **kwargs: Any) -> None:
    """Run into ``out`` and die right after block ``index`` is stored."""
    save_block = ResumeStore.save_block

    def save_then_die(self, i, *args, **kw):
        save_block(self, i, *args, **kw)
        if i == index:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(ResumeStore, "save_block", save_then_die)
        with pytest.raises(Killed):
            _autoround(model_dir, **kwargs).quantize_and_save(out)


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


def _assert_same_checkpoint(mine: Path, theirs: Path) -> None:
    mine_tensors, their_tensors = load_safetensors_dir(mine), load_safetensors_dir(theirs)
    assert sorted(mine_tensors) == sorted(their_tensors)
    for name, tensor in their_tensors.items():
        assert torch.equal(mine_tensors[name], tensor), name


def _assert_refusal_to_clear(error: pytest.ExceptionInfo, out: Path) -> None:
    """The message is one line naming the resume folder and the command that clears it."""
    message = str(error.value)
    assert "\n" not in message
    assert f"rm -rf {shlex.quote(str(_progress(out)))}" in message


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
    _assert_same_checkpoint(out, reference)
    assert (out / "config.json").read_text() == (reference / "config.json").read_text()
    assert (out / "autoround_report.json").read_text().count('"name"') == 4


def test_resuming_with_different_arguments_is_refused_naming_them(tmp_path, make_llama) -> None:
    out = tmp_path / "out"
    first = AutoRound(make_llama(), None, group_size=32, dataset=CALIBRATION, iters=2, nsamples=4, seqlen=32)
    ResumeStore(
        out,
        fingerprint(
            first.calibration(), first.model, None, **fingerprinted_arguments(first.model, first.run)
        ),
    ).close()
    second = AutoRound(make_llama(), None, group_size=32, dataset=CALIBRATION, iters=3, nsamples=4, seqlen=32)
    with pytest.raises(ResumeError, match=r"differ.*: tuning\b") as error:
        second.quantize_and_save(out)
    _assert_refusal_to_clear(error, out)


def test_resuming_after_the_input_model_weights_changed_is_refused_naming_the_weights(
    tmp_path, monkeypatch, model_dir
) -> None:
    out = tmp_path / "out"
    _killed_after_block(monkeypatch, model_dir, out, index=0)
    edited = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        edited.model.layers[2].mlp.down_proj.weight[0, 0] += 1.0  # same config, one weight differs
    edited.save_pretrained(model_dir)

    with pytest.raises(ResumeError, match="model weights") as error:
        _autoround(model_dir).quantize_and_save(out)
    assert "tokenizer" not in str(error.value) and "calibration" not in str(error.value)
    _assert_refusal_to_clear(error, out)


def test_resuming_with_a_different_tokenizer_is_refused_naming_the_tokenizer(
    tmp_path, monkeypatch, model_dir, tiny_tokenizer
) -> None:
    out = tmp_path / "out"
    _killed_after_block(monkeypatch, model_dir, out, index=0, tokenizer=tiny_tokenizer)
    tiny_tokenizer.add_tokens(["w_added"])  # the calibration ids stay the same: only this differs

    with pytest.raises(ResumeError, match=r"differ.*: tokenizer\b") as error:
        _autoround(model_dir, tiny_tokenizer).quantize_and_save(out)
    assert "model weights" not in str(error.value)
    _assert_refusal_to_clear(error, out)


@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_run_killed_while_committing_a_block_resumes_to_the_uninterrupted_checkpoint(
    tmp_path, monkeypatch, model_dir, moment
) -> None:
    reference = _autoround(model_dir).quantize_and_save(tmp_path / "reference")
    out = tmp_path / "out"
    replace = os.replace

    def die_at_block_1(src, dst):
        if Path(dst).name.startswith("block-0001"):
            if moment == "after":
                replace(src, dst)
            raise Killed
        replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(resume_module.os, "replace", die_at_block_1)
        with pytest.raises(Killed):
            _autoround(model_dir).quantize_and_save(out)

    _autoround(model_dir).quantize_and_save(out)  # neither crashes nor mixes blocks
    _assert_same_checkpoint(out, reference)
    assert json.loads((out / "autoround_report.json").read_text())["blocks"][2]["name"].endswith("2")
    assert not _progress(out).exists()


@pytest.mark.parametrize("scheme", ["FP8_STATIC", "NVFP4"])
def test_a_killed_run_with_calibrated_activations_resumes_to_the_uninterrupted_checkpoint(
    tmp_path, monkeypatch, model_dir, scheme
) -> None:
    # each finished block's calibrated input ranges (input_scale / input_global_scale in the
    # checkpoint) come back from the resume folder, not from a new calibration
    fields = {"scheme": scheme, "group_size": -1 if scheme == "FP8_STATIC" else 16}
    reference = _autoround(model_dir, **fields).quantize_and_save(tmp_path / "reference")
    out = tmp_path / "out"
    _killed_after_block(monkeypatch, model_dir, out, index=0, **fields)
    _autoround(model_dir, **fields).quantize_and_save(out)
    _assert_same_checkpoint(out, reference)
    assert any("input" in name for name in load_safetensors_dir(out)), "the ranges were saved"


def _unparsable_manifest(folder: Path) -> None:
    (folder / "manifest.json").write_text('{"run": {"scheme"')


def _manifest_without_run(folder: Path) -> None:
    (folder / "manifest.json").write_text('{"format": 2}')


def _truncated_block(folder: Path) -> None:
    block = folder / "block-0000.safetensors"
    block.write_bytes(block.read_bytes()[: block.stat().st_size // 2])


def _block_without_report(folder: Path) -> None:
    save_file({"x": torch.zeros(1)}, str(folder / "block-0000.safetensors"))


@pytest.mark.parametrize(
    "damage", [_unparsable_manifest, _manifest_without_run, _truncated_block, _block_without_report]
)
def test_an_unreadable_resume_folder_is_refused_with_the_command_to_clear_it(
    tmp_path, monkeypatch, model_dir, damage
) -> None:
    out = tmp_path / "out"
    _killed_after_block(monkeypatch, model_dir, out, index=1)
    damage(_progress(out))

    with pytest.raises(ResumeError, match="cannot be read") as error:
        _autoround(model_dir).quantize_and_save(out)
    _assert_refusal_to_clear(error, out)


def test_a_second_run_into_the_same_output_is_refused_naming_the_lock_and_its_pid(
    tmp_path, model_dir
) -> None:
    out = tmp_path / "out"
    running = ResumeStore(out, {"another": "run"})
    with pytest.raises(ResumeError, match=rf"lock.*pid {os.getpid()}"):
        _autoround(model_dir).quantize_and_save(out)
    running.close()
    assert not out.exists(), "the refused run wrote nothing"

    with pytest.raises(ResumeError, match="differ"):  # the lock is free again: now it is compared
        _autoround(model_dir).quantize_and_save(out)


def test_a_run_that_failed_releases_its_lock_so_the_same_process_can_resume(
    tmp_path, monkeypatch, model_dir
) -> None:
    reference = _autoround(model_dir).quantize_and_save(tmp_path / "reference")
    out = tmp_path / "out"
    _killed_after_block(monkeypatch, model_dir, out, index=1)

    _autoround(model_dir).quantize_and_save(out)
    _assert_same_checkpoint(out, reference)


def test_a_refused_run_adds_nothing_to_the_folder_it_refused(tmp_path, model_dir) -> None:
    out = tmp_path / "out"
    _progress(out).mkdir()
    _unparsable_manifest(_progress(out))
    with pytest.raises(ResumeError, match=r"manifest\.json cannot be read") as error:
        _autoround(model_dir).quantize_and_save(out)
    _assert_refusal_to_clear(error, out)
    assert sorted(p.name for p in _progress(out).iterdir()) == ["manifest.json"]  # no lock file left
    assert not out.exists()


def test_a_full_disk_saving_a_block_names_it_and_leaves_no_temp_file(
    tmp_path, monkeypatch, model_dir
) -> None:
    from safetensors import SafetensorError

    from autoround.errors import OutputWriteError

    def no_space(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    out = tmp_path / "out"
    monkeypatch.setattr(resume_module, "save_file", no_space)
    with pytest.raises(OutputWriteError) as error:
        _autoround(model_dir).quantize_and_save(out)
    block = _progress(out) / "block-0000.safetensors"
    assert str(error.value) == (
        f"could not write {block}: Error while serializing: I/O error: No space left on device "
        "(os error 28); free space or choose another --output_dir"
    )
    assert sorted(p.name for p in _progress(out).iterdir()) == ["lock", "manifest.json"]
    assert not out.exists()


def test_a_full_disk_creating_the_folder_removes_it(tmp_path, monkeypatch, model_dir) -> None:
    from autoround.errors import OutputWriteError

    def no_space(self, data):
        raise OSError(28, "No space left on device")

    out = tmp_path / "out"
    monkeypatch.setattr(Path, "write_bytes", no_space)
    with pytest.raises(OutputWriteError, match=r"manifest\.json: \[Errno 28\] No space left on device; free"):
        _autoround(model_dir).quantize_and_save(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input-model"]
