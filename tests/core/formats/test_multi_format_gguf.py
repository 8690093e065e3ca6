"""A GGUF recipe in a format list (autoround.formats.combine), read as a specification:

* beside integer formats (``auto_round,auto_gptq,gguf:q4_k_m``) one run quantizes with the integer
  scheme; the integer checkpoints are what they would be alone, and the GGUF file holds llama.cpp's
  round-to-nearest of the same quantized weights with the recipe's per-tensor types;
* alone, a recipe quantizes with its own scheme when none is given, and a conflicting scheme is
  refused before any work;
* a GGUF scheme beside integer formats, and two recipes in one list, are refused before any work.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from gguf import quants as gguf_quants
from tiny_gguf import bpe_tokenizer, gguf_model

import autoround.runner as runner
from autoround import AutoRound
from autoround.dtypes import DTYPES, to_groups
from autoround.dtypes.gguf_blocks import BLOCK_TYPES
from autoround.errors import FormatError, SchemeError
from autoround.formats import gguf_file
from autoround.io import load_safetensors_dir
from autoround.loading import load_dense

pytestmark = pytest.mark.usefixtures("one_thread")
CALIBRATION = [torch.randint(0, 300, (32,), generator=torch.Generator().manual_seed(i)) for i in range(4)]
THREE = "auto_round,auto_gptq,gguf:q4_k_m"
LAYER = "model.layers.1.self_attn.v_proj"
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
QUANTIZED = [f"model.layers.{i}.{p}" for i in (0, 1) for p in (*PROJECTIONS, "mlp.down_proj")]


def _tuner(model, **kwargs) -> AutoRound:
    settings = {"dataset": CALIBRATION, "iters": 2, "nsamples": 4, "seqlen": 32, "batch_size": 2}
    return AutoRound(model, bpe_tokenizer(), **{**settings, **kwargs})


def _count_runs(monkeypatch) -> list[int]:
    calls: list[int] = []
    execute = runner.execute
    monkeypatch.setattr(runner, "execute", lambda *a, **k: calls.append(1) or execute(*a, **k))
    return calls


def _types(path) -> dict[str, str]:
    return {t.name: t.tensor_type.name.lower() for t in GGUFReader(gguf_file(path)).tensors}


def test_three_formats_from_one_tuning_run(tmp_path, monkeypatch, caplog) -> None:
    calls = _count_runs(monkeypatch)
    model = gguf_model()
    with caplog.at_level(logging.WARNING):
        out = _tuner(model).quantize_and_save(tmp_path / "out", format=THREE)
    assert len(calls) == 1
    assert "gguf:q4_k_m beside auto_round, auto_gptq" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["auto-gptq", "auto-round", "gguf-q4-k-m"]
    for sub in out.iterdir():  # every checkpoint records the one tuning run
        assert json.loads((sub / "autoround_report.json").read_text())["algorithm"] == "signround"

    # auto_round and auto_gptq: the integer scheme (W4A16); autoround's loader reads back every
    # tuned weight exactly
    tuned = {name: model.get_submodule(name).weight.detach() for name in QUANTIZED}
    for sub, method in (("auto-round", "auto-round"), ("auto-gptq", "gptq")):
        config = json.loads((out / sub / "config.json").read_text())["quantization_config"]
        assert (config["quant_method"], config["bits"], config["group_size"]) == (method, 4, 128)
        loaded = load_dense(out / sub, dtype=torch.float32)
        for name, weight in tuned.items():
            assert torch.equal(loaded.get_submodule(name).weight, weight), (sub, name)
    gptq = load_safetensors_dir(out / "auto-gptq")
    assert {f"{LAYER}.{t}" for t in ("qweight", "qzeros", "scales", "g_idx")} <= set(gptq)

    # gguf:q4_k_m: llama.cpp's recipe types, each layer its round-to-nearest of the tuned weights
    types = _types(out / "gguf-q4-k-m")
    assert types["blk.0.attn_v.weight"] == "q4_k" and types["blk.1.attn_v.weight"] == "q6_k"
    assert types["blk.1.ffn_down.weight"] == "q6_k" and types["blk.0.attn_q.weight"] == "q4_k"
    assert types["output.weight"] == "q6_k" and types["token_embd.weight"] == "q4_k"
    reader = {t.name: t for t in GGUFReader(gguf_file(out / "gguf-q4-k-m")).tensors}
    stored = reader["blk.1.attn_v.weight"]
    values = gguf_quants.dequantize(stored.data, stored.tensor_type)
    block = BLOCK_TYPES["q6_k"]
    grouped, _ = to_groups(tuned[LAYER], block.group)
    requantized, _ = DTYPES[block.data_type].qdq(grouped, block.bits, block.sym)
    np.testing.assert_array_equal(values, requantized.reshape(tuned[LAYER].shape).numpy())


def test_the_integer_checkpoints_are_the_same_with_or_without_the_gguf(tmp_path) -> None:
    with_gguf = _tuner(gguf_model()).quantize_and_save(tmp_path / "a", format=THREE)
    without = _tuner(gguf_model()).quantize_and_save(tmp_path / "b", format="auto_round,auto_gptq")
    for sub in ("auto-round", "auto-gptq"):
        ours, theirs = load_safetensors_dir(with_gguf / sub), load_safetensors_dir(without / sub)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), sub


def test_a_recipe_alone_quantizes_with_its_own_scheme_when_none_is_given(tmp_path, caplog) -> None:
    tuner = _tuner(gguf_model(), iters=0, disable_opt_rtn=True)
    with caplog.at_level(logging.INFO, logger="autoround.formats.combine"):
        out = tuner.quantize_and_save(tmp_path / "out", format="gguf:q4_k_m")
    assert "format gguf:q4_k_m alone: quantizing with its scheme GGUF:Q4_K_M" in caplog.text
    assert (tuner.scheme.data_type, tuner.scheme.bits, tuner.scheme.sym) == ("gguf_k", 4, False)
    assert {t for name, t in _types(out).items() if name.startswith("blk.0.attn_q")} == {"q4_k"}


@pytest.mark.parametrize(
    ("kwargs", "fmt", "error", "message"),
    [
        (
            {"scheme": "W4A16"},
            "gguf:q4_k_m",
            SchemeError,
            r"scheme 'W4A16' conflicts with format gguf:q4_k_m, which quantizes with llama.cpp's q4_k "
            r"blocks: leave the scheme out \(GGUF:Q4_K_M is used\) or pass GGUF:Q4_K_M",
        ),
        ({"bits": 8}, "gguf:q4_k_m", SchemeError, r"'W4A16' \(the default\) with bits=8 conflicts"),
        ({"scheme": "GGUF:Q2_K"}, "gguf:q4_k_m", SchemeError, r"'GGUF:Q2_K' conflicts with format"),
        (
            {"scheme": "GGUF:Q4_K_M"},
            THREE,
            SchemeError,
            r"'GGUF:Q4_K_M' is a GGUF scheme, which the formats beside gguf:q4_k_m \(auto_round, "
            r"auto_gptq\) cannot store .*pass an integer scheme",
        ),
        (
            {},
            "auto_round,gguf:q4_k_m,gguf:q2_k",
            FormatError,
            r"names 2 GGUF recipes \(gguf:q4_k_m, gguf:q2_k\); one run writes one GGUF recipe",
        ),
    ],
)
def test_refused_before_any_work(tmp_path, monkeypatch, kwargs, fmt, error, message) -> None:
    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("quantizing must not start"))
    with pytest.raises(error, match=message):
        _tuner(gguf_model(), **kwargs).quantize_and_save(tmp_path / "out", format=fmt)
    assert not (tmp_path / "out").exists()


def test_a_matching_gguf_scheme_is_accepted(tmp_path) -> None:
    # GGUF:Q4_K_S is a q4_k scheme like GGUF:Q4_K_M: the recipe's per-tensor choices still apply
    out = _tuner(gguf_model(), scheme="GGUF:Q4_K_S", iters=0, disable_opt_rtn=True).quantize_and_save(
        tmp_path / "out", format="gguf:q4_k_m"
    )
    assert _types(out)["blk.1.attn_v.weight"] == "q6_k"
