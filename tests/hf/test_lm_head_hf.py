"""A quantized lm_head through transformers' from_pretrained (AutoRoundConfig): same logits as core."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import autoround
from autoround.loading import load_quantized
from autoround.nn import QuantLinear
from autoround_hf import AutoRoundConfig

IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4]])

pytestmark = pytest.mark.filterwarnings("ignore:You passed `quantization_config`")


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.float()


def _hf_and_core(tmp_path, model, **kwargs):
    qm = autoround.quantize(model, "W4A16", progress=False, **kwargs)
    path = autoround.save(qm, tmp_path / "ckpt")
    hf = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, quantization_config=AutoRoundConfig(backend="torch")
    )
    return qm, hf, load_quantized(path, backend="torch")


def test_a_tied_model_with_an_8_bit_lm_head_loads_in_transformers_like_core(tmp_path, tiny_llama) -> None:
    qm, hf, core = _hf_and_core(tmp_path, tiny_llama, layer_config={"lm_head": "W8A16"})
    assert isinstance(hf.lm_head, QuantLinear) and hf.lm_head.scheme.bits == 8
    torch.testing.assert_close(_logits(hf), _logits(core), atol=1e-5, rtol=0)
    torch.testing.assert_close(_logits(hf), _logits(qm.model), atol=1e-4, rtol=1e-4)


def test_an_untied_default_scheme_lm_head_loads_in_transformers_like_core(tmp_path, tiny_qwen3) -> None:
    qm, hf, core = _hf_and_core(tmp_path, tiny_qwen3, quant_lm_head=True)
    assert isinstance(hf.lm_head, QuantLinear) and hf.lm_head.scheme.bits == 4
    torch.testing.assert_close(_logits(hf), _logits(core), atol=1e-5, rtol=0)
    torch.testing.assert_close(_logits(hf), _logits(qm.model), atol=1e-4, rtol=1e-4)
