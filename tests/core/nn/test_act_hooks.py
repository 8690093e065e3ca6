"""The in-memory model's activation hooks for the grouped kinds: a tiny llama quantized with RTN
and ``MXFP4`` (activations on) has a hook on every quantized Linear, and its forward equals a
plain-torch recomputation with an MXFP4 quantize-dequantize written out here (OCP MX: a shared
power-of-two scale per 32 features, ``floor(log2(max)) - 2`` as Intel's ``quant_mx``, E2M1
elements rounded half to even) applied to each layer's input. Saved in the ``llm_compressor``
format, the config carries compressed-tensors' own MXFP4 preset arguments and compressed-tensors
decompresses the checkpoint to the in-memory weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import TINY_LLAMA, build_model
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

import autoround
from autoround.dtypes.activations import qdq_groups
from autoround.nn.act_hooks import act_kind_of, attach_act_quant, detach_act_quant, hook_for
from autoround.schemes import parse_scheme

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
E2M1_MIDPOINTS = (E2M1[1:] + E2M1[:-1]) / 2
PROMPT = [[1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]]


def mxfp4_by_hand(x: torch.Tensor) -> torch.Tensor:
    """OCP MXFP4 quantize-dequantize of ``x`` per 32 features, in plain torch."""
    blocks = x.reshape(-1, 32).float()
    amax = blocks.abs().amax(-1, keepdim=True)
    # Intel's quant_mx: an all-zero block takes log2 = 1; E2M1's largest exponent is 2
    exponent = torch.floor(torch.where(amax == 0, 1.0, torch.log2(amax))) - 2
    scale = torch.exp2(exponent.clamp(-127, 127))
    scaled = (blocks / scale + 0).clamp(-6, 6)  # + 0: -0.0 becomes +0.0, as Intel adds v = 0
    magnitude = scaled.abs()
    index = torch.bucketize(magnitude, E2M1_MIDPOINTS)  # the lower neighbour on a midpoint
    on_midpoint = (index < 7) & (magnitude == E2M1_MIDPOINTS[index.clamp(max=6)])
    index = torch.where(on_midpoint & (index % 2 == 1), index + 1, index)  # ties to the even code
    values = torch.copysign(E2M1[index], scaled)
    return (values * scale).to(x.dtype).reshape(x.shape)


def _model() -> nn.Module:
    # initialised wider than by default, so the activations are far from all-zero blocks
    return build_model(LlamaConfig(**{**TINY_LLAMA, "initializer_range": 0.1}))


@pytest.fixture(scope="module")
def quantized():
    return autoround.quantize(_model(), "MXFP4", progress=False)


def test_mxfp4_by_hand_is_the_registrys_mxfp4() -> None:
    x = torch.randn(4, 7, 96, generator=torch.Generator().manual_seed(1)) * torch.logspace(-3, 3, 96)
    assert torch.equal(mxfp4_by_hand(x), qdq_groups(x, "mx_fp", 4, 32)[0])


def test_rtn_mxfp4_hooks_every_quantized_linear(quantized) -> None:
    linears = {name for name, module in quantized.model.named_modules() if isinstance(module, nn.Linear)}
    assert set(quantized.layers) == linears - {"lm_head"}
    hooked = {name for name, module in quantized.model.named_modules() if act_kind_of(module) is not None}
    assert hooked == set(quantized.layers)
    assert {act_kind_of(quantized.model.get_submodule(name)) for name in hooked} == {"mxfp4"}


def test_the_forward_is_a_plain_recomputation_with_each_input_quantized(quantized) -> None:
    model, ids = quantized.model, torch.tensor(PROMPT)
    with torch.no_grad():
        hooked = model(ids).logits
        detach_act_quant(model)
        unquantized_inputs = model(ids).logits
        by_hand = [
            model.get_submodule(name).register_forward_pre_hook(lambda m, args: (mxfp4_by_hand(args[0]),))
            for name in quantized.layers
        ]
        recomputed = model(ids).logits
        for handle in by_hand:
            handle.remove()
    assert attach_act_quant(model, quantized.plan.quantized()) == len(quantized.layers)
    assert torch.equal(hooked, recomputed)
    assert not torch.equal(hooked, unquantized_inputs)


def test_a_layer_keeps_one_hook_and_a_per_group_kind_its_group_size() -> None:
    model = _model()
    scheme = parse_scheme("W4A16", act_bits=8, act_data_type="fp", act_group_size=32)
    layers = {"model.layers.0.mlp.down_proj": scheme}
    assert attach_act_quant(model, layers) == attach_act_quant(model, layers) == 1
    down = model.get_submodule("model.layers.0.mlp.down_proj")
    assert len(down._forward_pre_hooks) == 1
    hook = hook_for(scheme)
    assert hook is not None and (hook.kind, hook.group_size) == ("fp8_group", 32)
    x = torch.randn(2, 3, 160)
    with torch.no_grad():
        assert torch.equal(down(x), nn.functional.linear(qdq_groups(x, "fp", 8, 32)[0], down.weight))
    assert hook_for(parse_scheme("MXFP4")).group_size is None  # type: ignore[union-attr]
    assert hook_for(parse_scheme("MXFP4", act_bits=16)) is None


def test_llm_compressor_stores_compressed_tensors_own_mxfp4_arguments(quantized, tmp_path: Path) -> None:
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        apply_quantization_config,
        preset_name_to_scheme,
    )

    path = autoround.save(quantized, tmp_path / "ckpt", format="llm_compressor")
    raw = json.loads((path / "config.json").read_text())["quantization_config"]
    (group,) = raw["config_groups"].values()
    theirs = preset_name_to_scheme("MXFP4", ["Linear"])
    assert group["format"] == "mxfp4-pack-quantized"
    assert group["input_activations"] == theirs.input_activations.model_dump(mode="json")
    assert group["weights"] == theirs.weights.model_dump(mode="json")
    config = QuantizationConfig.model_validate(raw)
    skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)
    apply_quantization_config(skeleton, config)
    compressor = ModelCompressor(quantization_config=config)
    compressor.compress_model(skeleton)
    missing, unexpected = skeleton.load_state_dict(load_file(path / "model.safetensors"), strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    compressor.decompress_model(skeleton)
    for name in quantized.layers:
        ours = quantized.model.get_submodule(name).weight
        assert torch.equal(skeleton.get_submodule(name).weight, ours), name
