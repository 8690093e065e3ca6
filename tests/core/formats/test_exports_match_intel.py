"""Our ``auto_gptq``, ``auto_awq``, ``auto_round:auto_gptq``, ``auto_round:auto_awq`` and
``llm_compressor`` checkpoints equal Intel auto-round 0.16.1's exports of the same RTN run on the
same dense model (``scripts/intel/make_export_fixtures.py``, ``make_gptq_awq_fixtures.py``):
every tensor byte for byte (dtype and values), every config field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from autoround import quantize, save
from autoround.io import load_safetensors_dir

FIXTURES = Path(__file__).parents[2] / "fixtures" / "intel"
MIXED = {"model.layers.0.mlp.down_proj": {"bits": 8}, "model.layers.1.self_attn.o_proj": {"bits": 16}}
SKIP = {"model.layers.1.self_attn.o_proj": {"bits": 16}}

#: Intel's checkpoint -> (our format, quantize arguments: the same run as Intel's call).
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny_llama_gptq_w4_g32": ("auto_gptq", {}),
    "tiny_llama_awq_w4_g32": ("auto_awq", {"sym": False}),
    "exports/gptq_w4_g32_mixed": ("auto_gptq", {"layer_config": MIXED}),
    "exports/gptq_w2_g32_asym": ("auto_gptq", {"scheme": "W2A16", "sym": False}),
    "exports/awq_w4_g32_sym_skip": ("auto_awq", {"layer_config": SKIP}),
    "exports/ar_gptq_w4_g32_asym": ("auto_round:auto_gptq", {"sym": False}),
    "exports/ar_awq_w4_g32_asym": ("auto_round:auto_awq", {"sym": False}),
    "exports/ar_awq_w4_g32_sym": ("auto_round:auto_awq", {}),
    "exports/llmc_w4_g32": ("llm_compressor", {}),
    "exports/llmc_w4_g32_asym": ("llm_compressor", {"sym": False}),
    "exports/llmc_w8_g32_mixed": ("llm_compressor", {"scheme": "W8A16", "layer_config": SKIP}),
}
#: Keys whose value Intel builds from a set (its order varies from run to run).
UNORDERED = ("modules_to_not_convert",)


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """Our checkpoint of each case, made on first use."""
    made: dict[str, Path] = {}

    def make(case: str) -> Path:
        if case not in made:
            fmt, kwargs = CASES[case]
            kwargs = dict(kwargs)
            dense = FIXTURES / "tiny_llama_dense"
            model = AutoModelForCausalLM.from_pretrained(dense, dtype=torch.bfloat16)
            qm = quantize(model, kwargs.pop("scheme", "W4A16"), group_size=32, progress=False, **kwargs)
            made[case] = save(qm, tmp_path_factory.mktemp("export") / "ckpt", format=fmt)
        return made[case]

    return make


def _normalized(config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    config.pop("autoround_version", None)
    for key in UNORDERED:
        if key in config:
            config[key] = sorted(config[key])
    return config


@pytest.mark.parametrize("case", list(CASES))
def test_tensors_are_byte_identical_to_intels(case, ours) -> None:
    mine, theirs = load_safetensors_dir(ours(case)), load_safetensors_dir(FIXTURES / case)
    assert sorted(mine) == sorted(theirs)
    for name, tensor in theirs.items():
        assert mine[name].dtype == tensor.dtype, name
        assert torch.equal(mine[name], tensor), name


@pytest.mark.parametrize("case", list(CASES))
def test_configs_equal_intels_field_for_field(case, ours) -> None:
    mine, theirs = (json.loads((d / "config.json").read_text()) for d in (ours(case), FIXTURES / case))
    assert _normalized(mine.pop("quantization_config")) == _normalized(theirs.pop("quantization_config"))
    for key in ("dtype", "torch_dtype", "tie_word_embeddings", "architectures"):
        assert mine.get(key) == theirs.get(key), key
    if (FIXTURES / case / "quantization_config.json").exists():
        mine, theirs = (
            json.loads((d / "quantization_config.json").read_text()) for d in (ours(case), FIXTURES / case)
        )
        assert _normalized(mine) == _normalized(theirs)


def test_the_fixtures_record_intels_calls() -> None:
    manifest = json.loads((FIXTURES / "exports" / "manifest.json").read_text())
    assert manifest["auto_round"] == "0.16.1"
    for case, (fmt, _) in CASES.items():
        if case.startswith("exports/"):
            assert manifest[case.removeprefix("exports/")]["format"] == fmt, case
