"""Several formats from one quantization run: each in its own subdirectory (Intel's names), all
written or none, refused before any work when one of them cannot take the scheme."""

from __future__ import annotations

import json

import pytest
import torch

import autoround
import autoround.runner as runner
from autoround import AutoRound
from autoround.errors import FormatError, SchemeError
from autoround.formats import checkpoint_dirs
from autoround.io import load_safetensors_dir

CALIBRATION = [torch.arange(i, i + 32) % 128 for i in range(4)]


def _tuner(model, **kwargs) -> AutoRound:
    settings = {"scheme": "W4A16", "group_size": 32, "dataset": CALIBRATION, "iters": 2, "nsamples": 4}
    return AutoRound(model, None, seqlen=32, batch_size=2, **{**settings, **kwargs})


def test_checkpoint_dirs_are_the_output_for_one_format_and_intels_subfolders_for_several(tmp_path) -> None:
    assert checkpoint_dirs(tmp_path, "auto_gptq") == {"auto_gptq": tmp_path}
    assert checkpoint_dirs(tmp_path, "auto_round,auto_round:auto_gptq,llm_compressor") == {
        "auto_round": tmp_path / "auto-round",
        "auto_round:auto_gptq": tmp_path / "auto-round-auto-gptq",
        "llm_compressor": tmp_path / "llm-compressor",
    }


def test_one_tuning_run_writes_every_format_with_its_report(tmp_path, tiny_llama, monkeypatch) -> None:
    calls = []
    execute = runner.execute
    monkeypatch.setattr(runner, "execute", lambda *a, **k: calls.append(1) or execute(*a, **k))
    out = _tuner(tiny_llama).quantize_and_save(tmp_path / "out", format="auto_round,auto_gptq,llm_compressor")
    assert len(calls) == 1
    assert sorted(p.name for p in out.iterdir()) == ["auto-gptq", "auto-round", "llm-compressor"]
    methods = {}
    for sub in out.iterdir():
        methods[sub.name] = json.loads((sub / "config.json").read_text())["quantization_config"][
            "quant_method"
        ]
        report = json.loads((sub / "autoround_report.json").read_text())
        assert report["algorithm"] == "signround"
    assert methods == {
        "auto-round": "auto-round",
        "auto-gptq": "gptq",
        "llm-compressor": "compressed-tensors",
    }
    # the same tuned codes in both GPTQ-layout checkpoints (auto_round's sym packing is GPTQ's)
    ours, gptq = load_safetensors_dir(out / "auto-round"), load_safetensors_dir(out / "auto-gptq")
    name = "model.layers.0.mlp.down_proj.qweight"
    assert torch.equal(ours[name], gptq[name])


def test_a_format_that_cannot_store_the_scheme_is_refused_before_tuning(
    tmp_path, tiny_llama, monkeypatch
) -> None:
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("tuning must not start"))
    with pytest.raises(
        SchemeError, match=r"cannot be stored in format 'auto_awq'.*formats that can store it: \["
    ):
        _tuner(tiny_llama, scheme="W2A16").quantize_and_save(tmp_path / "out", format="auto_round,auto_awq")
    with pytest.raises(FormatError, match=r"unknown format 'gguf:q9_k'"):
        _tuner(tiny_llama).quantize_and_save(tmp_path / "out", format="auto_round,gguf:q9_k")
    assert not (tmp_path / "out").exists()


def test_a_plan_one_format_cannot_store_is_refused_before_tuning_naming_who_can(
    tmp_path, tiny_llama, monkeypatch
) -> None:
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("tuning must not start"))
    tuner = _tuner(tiny_llama, group_size=64)  # 96 inputs: a partial last group AWQ cannot hold
    with pytest.raises(
        SchemeError, match=r"(?s)partial last group.*formats that store this plan: \[.auto_round."
    ):
        tuner.quantize_and_save(tmp_path / "out", format="auto_gptq,auto_awq")


def test_a_failure_in_a_later_format_leaves_nothing(tmp_path, tiny_llama, monkeypatch) -> None:
    from autoround.formats import FORMATS, compressed_tensors

    qm = autoround.quantize(tiny_llama, "W4A16G32", progress=False)

    def broken(qm, directory):
        raise OSError("disk went away")

    import dataclasses

    monkeypatch.setitem(
        FORMATS, "llm_compressor", dataclasses.replace(compressed_tensors.FORMAT, writer=broken)
    )
    with pytest.raises(OSError, match="disk went away"):
        autoround.save(qm, tmp_path / "out", format="auto_round,llm_compressor")
    assert list(tmp_path.iterdir()) == []


def test_refusals_name_the_format_when_there_are_several(tmp_path, tiny_llama) -> None:
    qm = autoround.quantize(tiny_llama, "W2A16G32", progress=False)
    with pytest.raises(FormatError, match=r"auto_awq: model\.layers\.0\.\S+: int 2-bit cannot be stored"):
        autoround.save(qm, tmp_path / "out", format="auto_round,auto_awq")
    assert list(tmp_path.iterdir()) == []
