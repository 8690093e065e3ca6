"""Intel auto-round 0.16.1's checkpoints with calibrated activations (``FP8_STATIC``: static
``input_scale``; NVFP4 W4A4: ``input_global_scale``; ``auto_round`` format, RTN; fixtures of
scripts/intel/make_static_act_exports.py) load through autoround-hf into float layers that
quantize their inputs with the stored scale: the same logits as core's ``load_quantized``, and
a ``save_pretrained`` of the loaded model loads back the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import autoround_hf
from autoround.loading import load_quantized
from autoround.nn import FloatQuantLinear

EXPORTS = Path(__file__).parents[1] / "fixtures" / "intel" / "exports"
#: fixture -> the activation kind its layers have.
CASES = {"ar_fp8_static": "fp8_static", "ar_nvfp4_w4a4": "nvfp4"}

pytestmark = pytest.mark.filterwarnings("ignore:You passed `quantization_config`")


def _logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("name", list(CASES))
def test_autoround_hf_loads_intels_export_as_load_quantized_does(name, tmp_path) -> None:
    meta = json.loads((EXPORTS / name / "reference.json").read_text())
    assert autoround_hf.installed()
    model = AutoModelForCausalLM.from_pretrained(EXPORTS / name, dtype=torch.float32).eval()
    layers = [m for m in model.modules() if isinstance(m, FloatQuantLinear)]
    assert len(layers) == 14 and {m.act_kind for m in layers} == {CASES[name]}
    assert all(m.input_absmax is not None and m.input_absmax > 0 for m in layers)
    logits = _logits(model, meta["input_ids"])
    assert torch.equal(
        logits, _logits(load_quantized(EXPORTS / name, dtype=torch.float32), meta["input_ids"])
    )
    model.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again", dtype=torch.float32).eval()
    assert torch.equal(_logits(again, meta["input_ids"]), logits)


@pytest.mark.parametrize("name", list(CASES))
def test_intels_export_gives_the_logits_and_tokens_of_intels_own_loader(name, monkeypatch) -> None:
    """Intel's loader serves these checkpoints (``reference.json`` names its layer classes): its
    NVFP4 layer computes as ours (float32); its FP8 static layer rounds the dequantized weight and
    the quantize-dequantized input to bfloat16 whatever the model's dtype, which ours does too
    once told to (then bit for bit), and need not: unrounded, the greedy text is the in-memory
    model's reference elsewhere (tests/core/formats/test_static_acts_auto_round.py)."""
    from safetensors.torch import load_file

    meta = json.loads((EXPORTS / name / "reference.json").read_text())
    reference = load_file(EXPORTS / name / "reference.safetensors")
    assert "intel_layer_class" in meta
    if name == "ar_fp8_static":
        weight, inputs = FloatQuantLinear.dequantized_weight, FloatQuantLinear.quantize_input
        bf16 = torch.bfloat16
        monkeypatch.setattr(
            FloatQuantLinear,
            "dequantized_weight",
            lambda self, dtype=torch.float32: weight(self, bf16).to(dtype),
        )
        monkeypatch.setattr(
            FloatQuantLinear,
            "quantize_input",
            lambda self, x, absmax=None: inputs(self, x, absmax).to(bf16).to(x.dtype),
        )
    model = AutoModelForCausalLM.from_pretrained(EXPORTS / name, dtype=torch.float32).eval()
    logits = _logits(model, meta["input_ids"])
    torch.testing.assert_close(logits, reference["loaded_logits"], rtol=0, atol=1e-5)
    ids = torch.tensor([meta["input_ids"]])
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=meta["new_tokens"], min_new_tokens=meta["new_tokens"], do_sample=False
        )
    assert out[0, ids.shape[1] :].tolist() == reference["loaded_greedy"].tolist()
