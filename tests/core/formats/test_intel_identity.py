"""Format identity on a tiny model: our RTN checkpoint equals the one Intel auto-round 0.16.1
wrote for the same dense model (``scripts/intel/make_tiny_fixture.py``), tensor for tensor."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from autoround import quantize, save
from autoround.io import load_safetensors_dir
from autoround.loading import load_dense

FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel"
INTEL = FIXTURE / "tiny_llama_w4a16_g32"


def _ours(tmp_path: Path):
    model = AutoModelForCausalLM.from_pretrained(FIXTURE / "tiny_llama_dense", dtype=torch.bfloat16)
    qm = quantize(model, "W4A16", group_size=32, progress=False)
    return qm, save(qm, tmp_path / "ours")


def test_tensors_are_bit_identical_to_intels(tmp_path) -> None:
    _, ours = _ours(tmp_path)
    mine, theirs = load_safetensors_dir(ours), load_safetensors_dir(INTEL)
    assert sorted(mine) == sorted(theirs)
    for name, tensor in theirs.items():
        assert mine[name].dtype == tensor.dtype and torch.equal(mine[name], tensor), name


def test_quantization_config_equals_intels_apart_from_the_version(tmp_path) -> None:
    _, ours = _ours(tmp_path)
    for file in ("config.json", "quantization_config.json"):
        mine, theirs = (json.loads((d / file).read_text()) for d in (ours, INTEL))
        mine, theirs = (c.get("quantization_config", c) for c in (mine, theirs))
        mine.pop("autoround_version"), theirs.pop("autoround_version")
        assert mine == theirs


def test_intels_checkpoint_unpacks_to_our_quantized_weights(tmp_path) -> None:
    qm, _ = _ours(tmp_path)
    dense = load_dense(INTEL).state_dict()
    for name, param in qm.model.state_dict().items():
        assert torch.equal(dense[name], param), name
