"""Intel auto-round 0.16.1's checkpoints with dynamic MX activations (``MXFP4`` / ``MXFP8`` W4A4 /
W8A8, floor and RCEIL exponents; ``MXINT4`` W4A4; ``auto_round`` format, RTN; fixtures of
scripts/intel/make_dynamic_act_exports.py) load through autoround-hf into float layers that
quantize their inputs per block of 32: Intel's logits and greedy tokens, the same logits as
core's ``load_quantized``, and a ``save_pretrained`` of the loaded model loads back the same.
The MXINT4 exports give the logits of Intel's in-memory model (Intel's own loader fails on the
weight-only one and quantizes MXINT4 inputs as MXFP4); a malformed MXINT4 scale is a
CheckpointError naming the tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_intel_float_checkpoints import KEY, _broken_copy, _load
from transformers import AutoModelForCausalLM

import autoround_hf
from autoround.errors import CheckpointError
from autoround.loading import load_quantized
from autoround.nn import FloatQuantLinear

EXPORTS = Path(__file__).parents[1] / "fixtures" / "intel" / "exports"
#: fixture -> the activation kind its layers have.
CASES = {
    "ar_mxfp4_w4a4": "mxfp4",
    "ar_mxfp8_w8a8": "mxfp8",
    "ar_mxfp4_rceil": "mxfp4_rceil",
    "ar_mxfp8_rceil": "mxfp8_rceil",
    "ar_mxint4": "mxint4",
    "ar_mxint4_w4a16": None,  # weight-only: Intel's loader fails on it, its in-memory model is the reference
}

pytestmark = pytest.mark.filterwarnings("ignore:You passed `quantization_config`")


def _logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("name", list(CASES))
def test_autoround_hf_loads_intels_export_with_intels_logits(name, tmp_path) -> None:
    meta = json.loads((EXPORTS / name / "reference.json").read_text())
    reference = load_file(EXPORTS / name / "reference.safetensors")
    assert autoround_hf.installed()
    model = AutoModelForCausalLM.from_pretrained(EXPORTS / name, dtype=torch.float32).eval()
    layers = [m for m in model.modules() if isinstance(m, FloatQuantLinear)]
    assert len(layers) == 14 and {m.act_kind for m in layers} == {CASES[name]}
    logits = _logits(model, meta["input_ids"])
    # Intel's loader fails on the weight-only MXINT4 export and quantizes MXINT4 inputs as MXFP4
    # (tests/core/formats/test_dynamic_act_exports.py): its in-memory model is the reference there
    which = "in_memory" if name.startswith("ar_mxint4") else "loaded"
    # within 1e-5 as the other Intel float logits (bit-identical on the fixture's AVX512 CPU)
    torch.testing.assert_close(logits, reference[f"{which}_logits"], rtol=0, atol=1e-5)
    assert torch.equal(
        logits, _logits(load_quantized(EXPORTS / name, dtype=torch.float32), meta["input_ids"])
    )
    ids = torch.tensor([meta["input_ids"]])
    with torch.no_grad():
        out = model.generate(
            ids, max_new_tokens=meta["new_tokens"], min_new_tokens=meta["new_tokens"], do_sample=False
        )
    assert out[0, ids.shape[1] :].tolist() == reference[f"{which}_greedy"].tolist()
    model.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again", dtype=torch.float32).eval()
    assert torch.equal(_logits(again, meta["input_ids"]), logits)


#: MXINT4 tensors broken (as test_intel_float_checkpoints breaks the other float layouts).
BROKEN_MXINT4 = {
    "scale_missing": (lambda t: t.pop(KEY + "weight_scale"), "is missing"),
    "scale_shape": (
        lambda t: t.update({KEY + "weight_scale": t[KEY + "weight_scale"].t().contiguous()}),
        "has shape",
    ),
    "scale_dtype": (
        lambda t: t.update({KEY + "weight_scale": t[KEY + "weight_scale"].float()}),
        "is float32",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_MXINT4))
def test_a_malformed_mxint4_scale_is_refused_naming_the_tensor(tmp_path, case) -> None:
    edit, message = BROKEN_MXINT4[case]
    path = _broken_copy(tmp_path, "ar_mxint4", edit)
    for loader in (lambda: _load(path), lambda: load_quantized(path)):
        with pytest.raises(CheckpointError, match=message) as err:
            loader()
        assert KEY + "weight_scale" in str(err.value)
