"""autoround_hf: from_pretrained through our quantizer, for our, Intel, GPTQ and AWQ checkpoints."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.quantizers import auto as hf_auto

import autoround
import autoround_hf
from autoround.errors import CheckpointError, UnsupportedLayerError
from autoround.formats import awq_layout
from autoround.loading import load_dense
from autoround.nn import QuantLinear
from autoround_hf import AutoRoundConfig, AutoRoundHfQuantizer

FIXTURES = Path(__file__).parents[1] / "fixtures" / "intel"
INTEL = FIXTURES / "tiny_llama_w4a16_g32"
GPTQ = FIXTURES / "tiny_llama_gptq_w4_g32"
AWQ = FIXTURES / "tiny_llama_awq_w4_g32"
IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4]])

pytestmark = pytest.mark.filterwarnings("ignore:You passed `quantization_config`")


def load(path, backend="torch", dtype=torch.float32, explicit=True, **kw):
    if explicit:  # (an explicit quantization_config=None makes transformers ignore config.json's)
        kw["quantization_config"] = AutoRoundConfig(backend=backend)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw)


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits.float()


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    from transformers import LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        vocab_size=128,
        tie_word_embeddings=True,
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    out = tmp_path_factory.mktemp("ours") / "w4g32"
    autoround.save(autoround.quantize(model, "W4A16", group_size=32, progress=False), out)
    return out


@pytest.mark.parametrize("backend,tol", [("torch", 1e-5), ("cpu", 1e-4)])
@pytest.mark.parametrize("explicit", [True, False])
def test_ours_matches_dense(ours, backend, tol, explicit):
    model = load(ours, backend, explicit=explicit) if explicit else load(ours, explicit=False)
    layers = [m for m in model.modules() if isinstance(m, QuantLinear)]
    assert layers and all(m.backend == (backend if explicit else m.backend) for m in layers)
    assert not any(isinstance(m, torch.nn.Linear) and m.weight.is_meta for m in model.modules())
    ref = load_dense(ours)
    torch.testing.assert_close(logits(model), logits(ref), atol=tol if explicit else 2e-2, rtol=0)


def test_generate_matches_dense(ours):
    model, ref = load(ours), load_dense(ours)
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(IDS, **kw), ref.generate(IDS, **kw))


def test_bf16(ours):
    model = load(ours, "torch", dtype=torch.bfloat16)
    layer = next(m for m in model.modules() if isinstance(m, QuantLinear))
    assert layer.scales.dtype == torch.float16  # stored dtype kept, not rounded to bf16
    torch.testing.assert_close(
        logits(model), logits(load_dense(ours, dtype=torch.bfloat16)), atol=3e-2, rtol=0
    )


def test_device_map_auto_cpu(ours):
    model = load(ours, device_map="auto")
    torch.testing.assert_close(logits(model), logits(load_dense(ours)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", [INTEL, GPTQ])
def test_intel_and_gptq_match_intel_dense(path):
    model = load(path)
    torch.testing.assert_close(
        logits(model), logits(load_dense(INTEL, dtype=torch.float32)), atol=1e-5, rtol=0
    )


def _awq_reference():
    """The dense fixture with each quantized weight replaced by an independent AWQ dequantization."""
    from safetensors.torch import load_file

    tensors = load_file(AWQ / "model.safetensors")
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny_llama_dense", dtype=torch.float32)
    for name, module in model.named_modules():
        if f"{name}.qweight" not in tensors:
            continue
        codes = awq_layout.unpack_awq(tensors[f"{name}.qweight"]).float()  # (in, out)
        zeros = awq_layout.unpack_awq(tensors[f"{name}.qzeros"]).float()  # (groups, out)
        scales = tensors[f"{name}.scales"].float()
        g = codes.shape[0] // zeros.shape[0]
        w = (codes - zeros.repeat_interleave(g, 0)) * scales.repeat_interleave(g, 0)
        module.weight.data = w.t().contiguous()
    return model


def test_awq_matches_independent_dequant():
    model = load(AWQ)
    torch.testing.assert_close(logits(model), logits(_awq_reference()), atol=1e-5, rtol=0)
    dense = AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny_llama_dense", dtype=torch.float32)
    assert (logits(model) - logits(dense)).abs().max() < 0.5  # a wrong nibble order is far worse


@pytest.mark.parametrize("path", [GPTQ, AWQ])
def test_gptq_awq_save_pretrained_writes_auto_round(path, tmp_path):
    model = load(path)
    model.save_pretrained(tmp_path / "out")
    qc = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "auto-round" and "backend" not in qc
    assert qc["packing_format"] in ("auto_round", "auto_round:auto_gptq")
    torch.testing.assert_close(logits(load_dense(tmp_path / "out")), logits(model), atol=1e-5, rtol=0)


def test_config_round_trip():
    cfg = AutoRoundConfig(bits=2, group_size=64, sym=False, backend="cpu", extra_config={"a": {"bits": 16}})
    again = AutoRoundConfig.from_dict(cfg.to_dict(), backend="cpu")
    assert again.to_dict() == cfg.to_dict() and again.backend == "cpu"
    assert cfg.to_dict()["quant_method"] == "auto-round"


def test_install_uninstall_idempotent():
    assert autoround_hf.installed()
    autoround_hf.install()
    autoround_hf.install()
    assert hf_auto.AUTO_QUANTIZER_MAPPING["auto-round"] is AutoRoundHfQuantizer
    autoround_hf.uninstall()
    autoround_hf.uninstall()
    try:
        assert hf_auto.AUTO_QUANTIZER_MAPPING["auto-round"].__module__.startswith("transformers.")
        assert hf_auto.AUTO_QUANTIZATION_CONFIG_MAPPING["auto-round"].__module__.startswith("transformers.")
        assert not autoround_hf.installed()
    finally:
        autoround_hf.install()
    assert autoround_hf.installed()


def test_unknown_backend_lists_known():
    with pytest.raises(ValueError, match=r"unknown backend 'nope'.*torch"):
        AutoRoundConfig(backend="nope")


def test_scheme_no_backend_serves(ours, tmp_path, monkeypatch):
    # The kernel tests may have turned the Triton interpreter on for this session; without it,
    # triton cannot serve a CPU layer.
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    bad = _copy(ours, tmp_path)
    with pytest.raises(UnsupportedLayerError, match="would"):
        load(bad, backend="triton")  # triton needs CUDA (or the interpreter); says which would serve


def _copy(src, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst)
    return dst


def test_packed_shape_mismatch_names_layer_and_shapes(ours, tmp_path):
    bad = _copy(ours, tmp_path)
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"]["group_size"] = 16
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.\S+\.qzeros has shape \(2, .*need \(4, "):
        load(bad)


def test_pickle_refused_never_unpickled(ours, tmp_path, monkeypatch):
    bad = _copy(ours, tmp_path)
    (bad / "model.safetensors").unlink()
    (bad / "pytorch_model.bin").write_bytes(b"not a pickle: would fail if unpickled")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin is a pickle"):
        load(bad)


def test_truncated_safetensors_named(ours, tmp_path):
    bad = _copy(ours, tmp_path)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors"):
        load(bad)


def test_gptq_act_order_refused():
    with pytest.raises(ValueError, match="desc_act"):
        AutoRoundConfig.from_dict({"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": True})


def test_warnings_clean_for_plain_load(ours):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load(ours, explicit=False)
