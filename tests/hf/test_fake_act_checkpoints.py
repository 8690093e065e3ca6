"""Intel auto-round 0.16.1's checkpoints with integer dynamic activations (``INT8_W8A8``, ``INT4``
W4A4; packing ``auto_round:fake``, RTN; fixtures of scripts/intel/make_fake_act_exports.py) load
through autoround-hf into dense Linears that quantize their inputs per token: Intel's logits and
greedy tokens, core's ``load_quantized`` logits exactly, and a ``save_pretrained`` of the loaded
model loads back the same; a missing or misshapen weight is a CheckpointError naming it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import autoround_hf
from autoround.errors import CheckpointError
from autoround.loading import load_quantized
from autoround.nn.act_hooks import act_kind_of

EXPORTS = Path(__file__).parents[1] / "fixtures" / "intel" / "exports"
#: fixture -> the activation kind its layers have.
CASES = {"ar_int8_w8a8": "int8", "ar_int4_w4a4": "int4"}
KEY = "model.layers.0.mlp.gate_proj.weight"

pytestmark = pytest.mark.filterwarnings("ignore:You passed `quantization_config`")


def _load(path: Path) -> torch.nn.Module:
    assert autoround_hf.installed()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("name", list(CASES))
def test_autoround_hf_loads_intels_export_with_intels_logits(name, tmp_path) -> None:
    meta = json.loads((EXPORTS / name / "reference.json").read_text())
    reference = load_file(EXPORTS / name / "reference.safetensors")
    model = _load(EXPORTS / name)
    layers = [m for m in model.modules() if act_kind_of(m) is not None]
    assert len(layers) == 14 and {act_kind_of(m) for m in layers} == {CASES[name]}
    assert all(type(m) is torch.nn.Linear for m in layers)
    logits = _logits(model, meta["input_ids"])
    # within 1e-5 as the other Intel logits (bit-identical on the fixture's AVX512 CPU; another
    # ISA sums the same float32 products in another order)
    torch.testing.assert_close(logits, reference["in_memory_logits"], rtol=0, atol=1e-5)
    assert torch.equal(
        logits, _logits(load_quantized(EXPORTS / name, dtype=torch.float32), meta["input_ids"])
    )
    ids = torch.tensor([meta["input_ids"]])
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=meta["new_tokens"], min_new_tokens=meta["new_tokens"], do_sample=False
        )
    assert out[0, ids.shape[1] :].tolist() == reference["in_memory_greedy"].tolist()
    model.save_pretrained(tmp_path / "again")
    again = _load(tmp_path / "again")
    assert torch.equal(_logits(again, meta["input_ids"]), logits)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.pop(KEY), f"{KEY} is missing"),
        (lambda t: t.update({KEY: t[KEY].t().contiguous()}), rf"{KEY} has shape \(64, 128\)"),
    ],
    ids=["missing", "shape"],
)
def test_a_missing_or_misshapen_weight_is_refused_naming_it(tmp_path, edit, match) -> None:
    target = tmp_path / "broken"
    shutil.copytree(EXPORTS / "ar_int4_w4a4", target)
    tensors = load_file(target / "model.safetensors")
    edit(tensors)
    save_file(tensors, target / "model.safetensors")
    with pytest.raises(CheckpointError, match=match):
        _load(target)
