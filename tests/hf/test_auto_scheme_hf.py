"""An AutoScheme checkpoint of a tiny llama in transformers (autoround-hf): its per-layer plan
(``extra_config``) meets the budget as Intel counts it from the stored tensors, keeps vLLM's fused
layers on one scheme, reaches every loaded layer, and the loaded model computes the checkpoint
as an independent dequantization of its tensors does.

The plan really mixes: 3.3 bits per weight over W2A16G64,W4A16 (the options span 2.56 to 4.22 on
this model), RTN after the search.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import TINY_LLAMA, build_model, build_tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig

from autoround import AutoRound, AutoScheme
from autoround.nn import QuantLinear
from autoround_hf import AutoRoundConfig

pytestmark = pytest.mark.filterwarnings("ignore:You passed `quantization_config`")

AVG_BITS, OPTIONS = 3.3, "W2A16G64,W4A16"
TEXTS = [" ".join(["the of and to in a is was for on as with by at"] * 6)] * 8
IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]])
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model = build_model(LlamaConfig(**TINY_LLAMA))
    auto = AutoScheme(AVG_BITS, OPTIONS, nsamples=4, seqlen=32)
    settings = dict(dataset=TEXTS, nsamples=4, seqlen=32, iters=0, disable_opt_rtn=True)
    rounder = AutoRound(model, build_tokenizer(), scheme=auto, **settings)
    return rounder.quantize_and_save(tmp_path_factory.mktemp("auto_scheme") / "out")


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())["quantization_config"]


def _stored_bits(path: Path) -> dict[str, int]:
    """Bits of every decoder-block Linear as config.json states them: the top-level scheme unless
    ``extra_config`` names the layer."""
    config, tensors = _config(path), load_file(path / "model.safetensors")
    layers = [k.removesuffix(".qweight") for k in tensors if k.endswith(".qweight")]
    return {name: config["extra_config"].get(name, {}).get("bits", config["bits"]) for name in layers}


def _unpack(words: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Values packed little-end first into int32 words along ``dim`` (0 or 1), as int64."""
    shifts = torch.arange(0, 32, bits, dtype=torch.int64)
    values = (words.to(torch.int64).unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # (rows, cols, per)
    if dim == 0:
        return values.permute(0, 2, 1).reshape(-1, words.shape[1])
    return values.reshape(words.shape[0], -1)


def _independent_dequantization(path: Path) -> torch.nn.Module:
    """A plain transformers llama holding the checkpoint's tensors, each packed weight replaced by
    ``(code - zero) * scale`` unpacked here from ``qweight``/``qzeros``/``scales``."""
    config, tensors = _config(path), load_file(path / "model.safetensors")
    offset = 1 if config["packing_format"].endswith("auto_gptq") else 0  # GPTQ stores zero - 1
    state = {k: v.float() for k, v in tensors.items() if not k.endswith(("qweight", "qzeros", "scales"))}
    for name, bits in _stored_bits(path).items():
        group = config["extra_config"].get(name, {}).get("group_size", config["group_size"])
        codes = _unpack(tensors[f"{name}.qweight"], bits, 0)  # (in, out)
        zeros = _unpack(tensors[f"{name}.qzeros"], bits, 1) + offset  # (groups, out)
        scales = tensors[f"{name}.scales"].float()  # (groups, out)
        of_input = (torch.arange(codes.shape[0]) // group).clamp(max=scales.shape[0] - 1)
        state[f"{name}.weight"] = ((codes - zeros[of_input]) * scales[of_input]).t().contiguous()
    model = AutoModelForCausalLM.from_config(LlamaConfig(**TINY_LLAMA), dtype=torch.float32).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) <= {"lm_head.weight"} and not unexpected, (missing, unexpected)  # lm_head: tied
    return model


def _load(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, quantization_config=AutoRoundConfig(backend="torch")
    )


def test_the_plan_mixes_and_meets_the_budget_as_counted_from_the_stored_tensors(checkpoint) -> None:
    tensors = load_file(checkpoint / "model.safetensors")
    bits = weights = 0
    for name, b in _stored_bits(checkpoint).items():
        groups, out = tensors[f"{name}.scales"].shape
        layer_weights = tensors[f"{name}.qweight"].numel() * 32 // b
        bits += layer_weights * b + groups * out * (16 + b)  # Intel: a 16-bit scale, a b-bit zero per group
        weights += layer_weights
    assert weights == 2 * (96 * (96 + 32 + 32) + 96 * 96 + 3 * 96 * 160)  # every block Linear counted
    assert bits <= int(weights * AVG_BITS)
    assert bits / weights > AVG_BITS - 0.15  # the budget is spent, not left on the table
    assert sorted(set(_stored_bits(checkpoint).values())) == [2, 4]


def test_fused_layers_share_one_scheme_in_the_checkpoint(checkpoint) -> None:
    stored = _stored_bits(checkpoint)
    for block in range(TINY_LLAMA["num_hidden_layers"]):
        for parts in FUSED:
            names = [n for n in stored if n.startswith(f"model.layers.{block}.") and n.endswith(parts)]
            assert len(names) == len(parts) and len({stored[n] for n in names}) == 1, names


def test_transformers_loads_each_layer_at_its_planned_bits(checkpoint) -> None:
    model = _load(checkpoint)
    loaded = {n: m.scheme.bits for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert loaded == _stored_bits(checkpoint)


def test_transformers_computes_the_independent_dequantization(checkpoint) -> None:
    model, reference = _load(checkpoint), _independent_dequantization(checkpoint)
    with torch.no_grad():
        got, want = model(IDS).logits, reference(IDS).logits
        dense = build_model(LlamaConfig(**TINY_LLAMA))(IDS).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert (got - dense).abs().max() > 1e-3  # the reference is quantized, not the source model
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(IDS, **kw), reference.generate(IDS, **kw))
