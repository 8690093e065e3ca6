"""Low-memory tuning (``low_cpu_mem_usage``): a model loaded block by block from its safetensors,
tuned and saved from the resume store, writes the checkpoint the normal path writes, bit for bit;
a killed low-memory run resumes to it; where it cannot apply it is off (said in a log line), and
refused when asked for explicitly."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import TINY_LLAMA, TINY_QWEN3_MOE, build_model, build_tokenizer
from transformers import LlamaConfig, Qwen3MoeConfig

from autoround import AutoRound, runner
from autoround.errors import UsageError
from autoround.io import load_safetensors_dir
from autoround.model_sources.blockwise import source_of
from autoround.resume import ResumeStore

CALIBRATION = [torch.arange(i, i + 32) % 128 for i in range(4)]
ARGS: dict[str, Any] = {
    "group_size": 32,
    "nsamples": 4,
    "seqlen": 32,
    "batch_size": 2,
    "dataset": CALIBRATION,
}


WORKER = Path(__file__).with_name("resume_worker.py")


def _worker(model_dir: Path, out: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    command = [sys.executable, str(WORKER), str(model_dir), str(out), *flags]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _progress(out: Path) -> Path:
    return out.parent / f".{out.name}.autoround-resume"


class Killed(BaseException):
    """Stands in for SIGKILL (BaseException: nothing may catch it)."""


@pytest.fixture(scope="module", params=["llama-fp32", "llama-bf16", "moe-fp32"])
def model_dir(request, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp(request.param) / "model"
    kind, dtype = request.param.split("-")
    if kind == "moe":  # fused experts in memory, per-expert tensors in the files
        config: Any = Qwen3MoeConfig(**{**TINY_QWEN3_MOE, "num_hidden_layers": 3})
    else:
        config = LlamaConfig(**{**TINY_LLAMA, "num_hidden_layers": 3})
    build_model(config, dtype=getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype])).save_pretrained(
        path
    )
    build_tokenizer().save_pretrained(path)
    return path


def _one_model_is_enough(model_dir: Path) -> None:
    if "llama-fp32" not in str(model_dir.parent):
        pytest.skip("checked on the fp32 llama")


def _save(model_dir: Path, out: Path, low: bool | None, **overrides: Any) -> AutoRound:
    ar = AutoRound(str(model_dir), None, low_cpu_mem_usage=low, **{**ARGS, "iters": 2, **overrides})
    assert (source_of(ar.model) is not None) == (low is not False)
    ar.quantize_and_save(out)
    return ar


def assert_same_checkpoint(mine: Path, theirs: Path) -> None:
    """Every tensor (names, dtypes, values), every weight file's bytes and config.json equal."""
    mine_tensors, their_tensors = load_safetensors_dir(mine), load_safetensors_dir(theirs)
    assert list(mine_tensors) == list(their_tensors)
    for name, tensor in their_tensors.items():
        assert mine_tensors[name].dtype == tensor.dtype and torch.equal(mine_tensors[name], tensor), name
    files = sorted(p.name for p in theirs.iterdir())
    assert sorted(p.name for p in mine.iterdir()) == files
    for name in files:
        if name.endswith(".safetensors") or (name.endswith(".json") and name != "autoround_report.json"):
            assert (mine / name).read_bytes() == (theirs / name).read_bytes(), name


@pytest.mark.parametrize(
    "overrides", [{}, {"iters": 0}, {"sym": False, "iters": 3}], ids=["sr", "rtn", "asym"]
)
def test_low_memory_tuning_writes_the_normal_checkpoint(tmp_path, model_dir, overrides) -> None:
    if overrides.get("iters") == 0:  # opt-RTN is whole-model: off, said so, same result
        ar = AutoRound(str(model_dir), None, **{**ARGS, **overrides})
        assert source_of(ar.model) is None
        return
    _save(model_dir, tmp_path / "normal", False, **overrides)
    ar = _save(model_dir, tmp_path / "low", True, **overrides)
    assert_same_checkpoint(tmp_path / "low", tmp_path / "normal")
    assert not _progress(tmp_path / "low").exists()
    blocks = ar.model.get_submodule("model.layers")
    assert all(p.is_meta for p in blocks.parameters()), "no block is left in memory"


def test_a_killed_low_memory_run_resumes_to_the_same_checkpoint(tmp_path, model_dir, monkeypatch) -> None:
    _save(model_dir, tmp_path / "normal", False)
    out = tmp_path / "low"
    save_block = ResumeStore.save_block

    def save_then_die(self, index, *args, **kwargs):
        save_block(self, index, *args, **kwargs)
        if index == 1:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(ResumeStore, "save_block", save_then_die)
        with pytest.raises(Killed):
            _save(model_dir, out, True)
    assert len(list(_progress(out).glob("block-*.safetensors"))) == 2 and not out.exists()
    _save(model_dir, out, True)
    assert_same_checkpoint(out, tmp_path / "normal")


def test_a_low_memory_run_killed_by_sigkill_resumes(tmp_path, model_dir) -> None:
    _one_model_is_enough(model_dir)
    reference = tmp_path / "reference"
    assert _worker(model_dir, reference, "--low_cpu_mem_usage=0").wait(timeout=300) == 0
    out = tmp_path / "resumed"
    proc = _worker(model_dir, out, "--low_cpu_mem_usage=1")
    deadline = time.monotonic() + 300
    while not (_progress(out) / "block-0000.safetensors").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert _worker(model_dir, out, "--low_cpu_mem_usage=1").wait(timeout=300) == 0
    assert_same_checkpoint(out, reference)


def test_where_it_cannot_apply_it_is_off_and_says_why(model_dir, caplog) -> None:
    _one_model_is_enough(model_dir)
    with caplog.at_level(logging.INFO, logger="autoround.runner"):
        ar = AutoRound(str(model_dir), None, iters=0, **ARGS)
    assert source_of(ar.model) is None
    assert "low_cpu_mem_usage off: optimized RTN works on the whole model" in caplog.text.replace(
        "Optimized", "optimized"
    )


def test_asked_for_where_it_cannot_apply_it_is_refused(model_dir) -> None:
    _one_model_is_enough(model_dir)
    with pytest.raises(UsageError, match=r"low_cpu_mem_usage=True cannot apply: .*whole model"):
        AutoRound(str(model_dir), None, iters=0, low_cpu_mem_usage=True, **ARGS)
    with pytest.raises(UsageError, match="passed in built"):
        AutoRound(build_model(LlamaConfig(**TINY_LLAMA)), None, low_cpu_mem_usage=True, **ARGS)
    with pytest.raises(ValueError, match="low_cpu_mem_usage must be True, False or None, got 'yes'"):
        AutoRound(str(model_dir), None, low_cpu_mem_usage="yes", **ARGS)


def test_a_format_exported_from_the_whole_model_reads_the_model_whole(
    tmp_path, model_dir, caplog, monkeypatch
) -> None:
    _one_model_is_enough(model_dir)
    ar = AutoRound(str(model_dir), None, iters=1, **{k: v for k, v in ARGS.items() if k != "group_size"})
    assert source_of(ar.model) is not None
    saved = []
    monkeypatch.setattr(runner, "save", lambda result, *args: saved.append(result.model) or tmp_path)
    with caplog.at_level(logging.INFO, logger="autoround.runner"):
        ar.quantize_and_save(tmp_path / "gguf", format="gguf:q4_0")
    assert "low_cpu_mem_usage off: format gguf:q4_0 is exported from the whole model" in caplog.text
    assert source_of(saved[0]) is None
    assert not any(p.is_meta for p in saved[0].parameters()), "every block was read"


def test_the_command_line_flags() -> None:
    from autoround.cli.commands import build_parser
    from autoround.cli.tuning_args import low_cpu_mem_usage

    parse = build_parser().parse_args
    assert low_cpu_mem_usage(parse(["--model", "m"])) is None
    assert low_cpu_mem_usage(parse(["--model", "m", "--low_cpu_mem_usage"])) is True
    assert low_cpu_mem_usage(parse(["--model", "m", "--disable-low-cpu-mem-usage"])) is False
    with pytest.raises(UsageError, match="contradict"):
        low_cpu_mem_usage(parse(["--model", "m", "--low_cpu_mem_usage", "--disable_low_cpu_mem_usage"]))


def test_quantize_without_saving_reads_the_model_whole(model_dir) -> None:
    _one_model_is_enough(model_dir)
    ar = AutoRound(str(model_dir), None, iters=1, **ARGS)
    assert source_of(ar.model) is not None
    result = ar.quantize()
    assert source_of(ar.model) is None
    assert not any(p.is_meta for p in result.model.parameters())


def test_the_outer_tensors_leave_memory_while_blocks_are_tuned(tmp_path, model_dir, monkeypatch) -> None:
    _one_model_is_enough(model_dir)
    ar = AutoRound(str(model_dir), None, low_cpu_mem_usage=True, **{**ARGS, "iters": 2})
    outer = ar.model.get_submodule("model.embed_tokens")
    seen: list[bool] = []
    save_block = ResumeStore.save_block

    def save_and_look(self, *args, **kwargs):
        seen.append(outer.weight.is_meta and ar.model.get_submodule("lm_head").weight.is_meta)
        save_block(self, *args, **kwargs)

    monkeypatch.setattr(ResumeStore, "save_block", save_and_look)
    ar.quantize_and_save(tmp_path / "low")
    assert seen == [True] * 3, "embedding and tied lm_head on meta while every block is tuned"
    _save(model_dir, tmp_path / "normal", False)
    assert_same_checkpoint(tmp_path / "low", tmp_path / "normal")  # read again to save


def test_the_save_holds_one_part_at_a_time(tmp_path, model_dir, monkeypatch) -> None:
    """Each part's tensors are freed before the next part is made: the packed tensors of all
    blocks are never in memory together (watched through weak references)."""
    _one_model_is_enough(model_dir)
    from autoround.formats.streamed import PartSpill

    alive: list[weakref.ref] = []
    parts: list[list[str]] = []
    add = PartSpill.add

    def add_and_watch(self, tensors):
        assert not [ref for ref in alive if ref() is not None], "an earlier part is still in memory"
        parts.append(sorted({name.split(".")[2] for name in tensors if name.startswith("model.layers.")}))
        alive.extend(weakref.ref(t) for t in tensors.values())
        add(self, tensors)

    monkeypatch.setattr(PartSpill, "add", add_and_watch)
    _save(model_dir, tmp_path / "low", True)
    assert parts == [[], ["0"], ["1"], ["2"]], "the outer tensors, then one block per part"
