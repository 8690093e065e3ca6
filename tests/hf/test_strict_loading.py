"""autoround_hf's strict loading: MoE experts load unfused, and broken checkpoints are refused.

transformers' own MISSING / UNEXPECTED report only warns (and initialises what is missing at
random), so the quantizer checks every expected tensor against the checkpoint's files itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import TINY_LLAMA, build_model
from transformers import AutoModelForCausalLM, LlamaConfig

import autoround
import autoround_hf  # noqa: F401  (installs the quantizer)
from autoround.errors import CheckpointError
from autoround.loading import load_dense
from autoround.modeling.moe import UnfusedExperts
from autoround.nn import QuantLinear
from autoround_hf import AutoRoundConfig

IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4]])
QUANTIZED = "model.layers.0.self_attn.q_proj"

pytestmark = pytest.mark.filterwarnings("ignore:You passed `quantization_config`")


def load(path: Path) -> torch.nn.Module:
    config = AutoRoundConfig(backend="torch")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, quantization_config=config)


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.float()


def _save(model: torch.nn.Module, path: Path, **kw) -> Path:
    autoround.save(autoround.quantize(model, "W4A16", progress=False, **kw), path)
    return path


@pytest.fixture(scope="module")
def dense_ckpt(tmp_path_factory) -> Path:
    """A tied-embedding llama, W4 g32 (lm_head.weight is not in the file: it is the embedding)."""
    narrow = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2}
    model = build_model(LlamaConfig(**{**TINY_LLAMA, **narrow}))
    return _save(model, tmp_path_factory.mktemp("strict") / "w4g32", group_size=32)


def _broken(src: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``src`` whose single safetensors file is rewritten by ``edit(tensors)``."""
    dst = tmp_path / "broken"
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


# --- case 3: MoE experts ---------------------------------------------------------------------


def _assert_unfused_and_loaded(model: torch.nn.Module) -> None:
    experts = [m for m in model.modules() if isinstance(m, UnfusedExperts)]
    assert len(experts) == 2
    assert all(isinstance(expert.gate_proj, QuantLinear) for expert in experts[0].children())
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def test_moe_loads_unfused_experts_matching_dense(tiny_qwen3_moe, tmp_path):
    path = _save(tiny_qwen3_moe, tmp_path / "moe")
    model = load(path)
    _assert_unfused_and_loaded(model)
    torch.testing.assert_close(logits(model), logits(load_dense(path)), atol=1e-4, rtol=0)


def test_moe_matches_core_loader(tiny_qwen3_moe, tmp_path):
    path = _save(tiny_qwen3_moe, tmp_path / "moe")
    model = load(path)
    core = autoround.load_quantized(path, backend="torch")
    torch.testing.assert_close(logits(model), logits(core), atol=1e-4, rtol=0)


def test_moe_16_bit_experts_are_not_refused(tiny_qwen3_moe, tmp_path):
    # Per-expert ``.weight`` keys match transformers' qwen3_moe converter, which would fuse them
    # into ``mlp.experts.gate_up_proj``: the quantizer must drop that converter.
    layer_config = {"layers.1.mlp.experts.": {"bits": 16}}  # a substring (Intel semantics)
    path = _save(tiny_qwen3_moe, tmp_path / "moe16", layer_config=layer_config)
    model = load(path)
    _assert_unfused_and_loaded(model)
    assert type(model.model.layers[1].mlp.experts[0].up_proj) is torch.nn.Linear
    torch.testing.assert_close(logits(model), logits(load_dense(path)), atol=1e-4, rtol=0)


def test_moe_save_pretrained_round_trip(tiny_qwen3_moe, tmp_path):
    model = load(_save(tiny_qwen3_moe, tmp_path / "moe"))
    model.save_pretrained(tmp_path / "again")
    keys = load_file(tmp_path / "again" / "model.safetensors").keys()
    assert "model.layers.0.mlp.experts.3.down_proj.qweight" in keys
    torch.testing.assert_close(logits(load(tmp_path / "again")), logits(model), atol=1e-5, rtol=0)


# --- case 4: broken checkpoints ---------------------------------------------------------------


@pytest.mark.parametrize("leaf", ["qweight", "qzeros", "scales"])
def test_missing_packed_tensor_named(dense_ckpt, tmp_path, leaf):
    bad = _broken(dense_ckpt, tmp_path, lambda t: t.pop(f"{QUANTIZED}.{leaf}"))
    with pytest.raises(CheckpointError, match=rf"{QUANTIZED}\.{leaf} is missing from .*model\.safetensors"):
        load(bad)


@pytest.mark.parametrize(
    "leaf,dtype,expected",
    [
        ("scales", torch.float32, "float16"),
        ("qweight", torch.int64, "int32"),
        ("qzeros", torch.int16, "int32"),
    ],
)
def test_wrong_dtype_packed_tensor_named(dense_ckpt, tmp_path, leaf, dtype, expected):
    def edit(tensors):
        tensors[f"{QUANTIZED}.{leaf}"] = tensors[f"{QUANTIZED}.{leaf}"].to(dtype)

    bad = _broken(dense_ckpt, tmp_path, edit)
    pattern = rf"{QUANTIZED}\.{leaf} in .*model\.safetensors is {str(dtype)[6:]}.* needs {expected}"
    with pytest.raises(CheckpointError, match=pattern):
        load(bad)


def test_unexpected_packed_tensor_refused(dense_ckpt, tmp_path):
    # config.json leaves down_proj of block 0 in 16 bits, but the file still holds its packed tensors.
    layer = "model.layers.0.mlp.down_proj"

    def edit(tensors):
        tensors[f"{layer}.weight"] = torch.zeros(64, 128)

    bad = _broken(dense_ckpt, tmp_path, edit)
    config = json.loads((bad / "config.json").read_text())
    config["quantization_config"]["extra_config"] = {layer: {"bits": 16, "data_type": "fp"}}
    (bad / "config.json").write_text(json.dumps(config))
    pattern = rf"{layer}\.qweight in .*model\.safetensors is a packed tensor.*leaves {layer} unquantized"
    with pytest.raises(CheckpointError, match=pattern):
        load(bad)


def test_packed_tensor_for_a_16_bit_layer_refused(dense_ckpt, tmp_path):
    def edit(tensors):
        tensors["lm_head.qweight"] = torch.zeros(8, 128, dtype=torch.int32)

    with pytest.raises(CheckpointError, match=r"lm_head\.qweight in .* is a packed tensor"):
        load(_broken(dense_ckpt, tmp_path, edit))


@pytest.mark.parametrize("key", ["model.norm.weight", "model.embed_tokens.weight"])
def test_missing_dense_tensor_refused(dense_ckpt, tmp_path, key):
    bad = _broken(dense_ckpt, tmp_path, lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=rf"{key} is missing from .*model\.safetensors"):
        load(bad)


def test_unknown_tensor_refused(dense_ckpt, tmp_path):
    def edit(tensors):
        tensors["model.layers.0.mystery.weight"] = torch.zeros(4)

    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.mystery\.weight in .* has no place"):
        load(_broken(dense_ckpt, tmp_path, edit))


def test_tied_lm_head_is_not_missing(dense_ckpt):
    assert "lm_head.weight" not in load_file(dense_ckpt / "model.safetensors")
    model = load(dense_ckpt)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    torch.testing.assert_close(logits(model), logits(load_dense(dense_ckpt)), atol=1e-5, rtol=0)
