"""The ``llm_compressor`` format's float layouts (FP8, NVFP4, MXFP4, MXFP8), checked by
compressed-tensors itself: its ``ModelCompressor`` decompresses our checkpoint, layer by layer, to
exactly the quantize-dequantized weights of the model in memory; and pre-flight refuses what a
format cannot store before any tuning, naming the formats that can.

compressed-tensors decompresses FP4 and MX layers to bfloat16, so those cases use a bfloat16
model; FP8 ones a float32 model (a bfloat16 model's loader would round the float32 scales).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import autoround
from autoround import AutoRound
from autoround.errors import SchemeError
from autoround.formats.compressed_tensors_float import pack_float_layer
from autoround.formats.preflight import check_plan, check_schemes
from autoround.layer_plan import resolve
from autoround.layer_quant import LayerQuant, quantize_weight
from autoround.schemes import parse_scheme

BF16, FP32 = torch.bfloat16, torch.float32
FP8_DOWN = {"mlp.down_proj": {"data_type": "fp", "bits": 8, "group_size": -1}}
#: case -> (model dtype, scheme, keywords); the tiny llama is 96 and 160 wide (whole groups of 32).
CASES: dict[str, tuple[torch.dtype, str, dict[str, Any]]] = {
    "fp per tensor": (FP32, "FPW8A16", {}),
    "fp per channel": (FP32, "FPW8A16", {"group_size": -1}),
    "fp group 32": (FP32, "FPW8A16", {"group_size": 32}),
    "nv_fp": (BF16, "NVFP4", {"act_bits": 16}),
    "mx_fp 4-bit": (BF16, "MXFP4", {"act_bits": 16}),
    "mx_fp_rceil 4-bit": (BF16, "MXFP4_RCEIL", {"act_bits": 16}),
    "mx_fp 8-bit": (BF16, "MXFP8", {"act_bits": 16}),
    "int + nv_fp + mx_fp": (
        BF16,
        "W4A16G32",
        {
            "layer_config": {
                "self_attn.o_proj": {"data_type": "nv_fp", "bits": 4, "group_size": 16},
                "mlp.up_proj": {"data_type": "mx_fp", "bits": 4, "group_size": 32},
                "model.layers.1.mlp.gate_proj": {"bits": 16},
            }
        },
    ),
    "int + fp": (FP32, "W4A16G32", {"layer_config": FP8_DOWN}),
}
#: Each float layout: (group format, strategy, {tensor: dtype}).
LAYOUTS = {
    "fp": ("naive-quantized", None, {"weight": torch.float8_e4m3fn, "weight_scale": FP32}),
    "nv_fp": (
        "nvfp4-pack-quantized",
        "tensor_group",
        {"weight_packed": torch.uint8, "weight_scale": torch.float8_e4m3fn, "weight_global_scale": FP32},
    ),
    "mx_fp4": ("mxfp4-pack-quantized", "group", {"weight_packed": torch.uint8, "weight_scale": torch.uint8}),
    "mx_fp8": ("mxfp8-quantized", "group", {"weight": torch.float8_e4m3fn, "weight_scale": torch.uint8}),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from tiny_models import TINY_LLAMA, build_model
    from transformers import LlamaConfig

    made: dict[str, tuple[Path, Any]] = {}

    def make(case: str) -> tuple[Path, Any]:
        if case not in made:
            dtype, scheme, kwargs = CASES[case]
            model = build_model(LlamaConfig(**TINY_LLAMA), dtype=dtype)
            qm = autoround.quantize(model, scheme, progress=False, **kwargs)
            path = tmp_path_factory.mktemp("ct-float") / "ckpt"
            made[case] = autoround.save(qm, path, format="llm_compressor"), qm
        return made[case]

    return make


def _decompressed(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    """The checkpoint as compressed-tensors loads it: its config applied to a skeleton of the
    model, compressed (the layouts' parameters), the file's tensors loaded, then decompressed."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
    from transformers import AutoConfig, AutoModelForCausalLM

    config = QuantizationConfig.model_validate(
        json.loads((path / "config.json").read_text())["quantization_config"]
    )
    skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    apply_quantization_config(skeleton, config)
    compressor = ModelCompressor(quantization_config=config)
    compressor.compress_model(skeleton)
    missing, unexpected = skeleton.load_state_dict(load_file(path / "model.safetensors"), strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    compressor.decompress_model(skeleton)
    return skeleton


@pytest.mark.parametrize("case", list(CASES))
def test_compressed_tensors_decompresses_our_checkpoint_to_the_quantized_weights(exported, case) -> None:
    path, qm = exported(case)
    dtype = CASES[case][0]
    loaded = _decompressed(path, dtype)
    for name in qm.layers:
        weight = loaded.get_submodule(name).weight
        assert torch.equal(weight.to(dtype), qm.model.get_submodule(name).weight), name


def _layout_key(scheme: Any) -> str:
    return f"mx_fp{scheme.bits}" if scheme.data_type.startswith("mx_fp") else scheme.data_type


@pytest.mark.parametrize("case", list(CASES))
def test_each_layer_is_stored_in_its_layout_with_its_config_group(exported, case) -> None:
    path, qm = exported(case)
    tensors = load_file(path / "model.safetensors")
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    groups = config["config_groups"]
    formats = {group["format"] for group in groups.values()}
    assert config["format"] == (formats.pop() if len(formats) == 1 else "mixed-precision")
    for name, quant in qm.layers.items():
        scheme = quant.scheme
        group = next(g for g in groups.values() if g["targets"] == ["Linear"] or name in g["targets"])
        assert group["input_activations"] is None  # weight-only
        if scheme.data_type == "int":
            assert group["format"] == "pack-quantized"
            continue
        fmt, strategy, dtypes = LAYOUTS[_layout_key(scheme)]
        assert (group["format"], group["weights"]["type"], group["weights"]["num_bits"]) == (
            fmt,
            "float",
            scheme.bits,
        )
        if strategy is not None:
            assert group["weights"]["strategy"] == strategy
        stored = {key[len(name) + 1 :]: t for key, t in tensors.items() if key.startswith(f"{name}.")}
        assert {key: t.dtype for key, t in stored.items()} == dtypes, name
        out, inputs = qm.model.get_submodule(name).weight.shape
        if "weight_packed" in stored:
            assert stored["weight_packed"].shape == (out, inputs // 2)
        if scheme.data_type == "fp" and scheme.group_size == 0:
            assert stored["weight_scale"].shape == (1,)
        elif scheme.data_type == "fp" and scheme.group_size == -1:
            assert stored["weight_scale"].shape == (out, 1)
        else:
            assert stored["weight_scale"].shape == (out, inputs // scheme.group_size)


def test_nvfp4_stores_the_dtypes_own_block_and_global_scales() -> None:
    torch.manual_seed(0)
    weight = torch.randn(8, 64, dtype=BF16)
    scheme = parse_scheme("NVFP4", act_bits=16)
    qdq, quant = quantize_weight(weight, scheme)
    assert quant.global_scale is not None and quant.cpu().global_scale is not None
    tensors = pack_float_layer(qdq, quant)
    torch.testing.assert_close(tensors["weight_global_scale"], quant.global_scale.reshape(1), rtol=0, atol=0)
    expected = (quant.scale.float() * quant.global_scale).to(torch.float8_e4m3fn)
    assert torch.equal(tensors["weight_scale"].float(), expected.float())
    # Without its global scale (a LayerQuant rebuilt from scale and zero) the block scales are the same.
    bare = LayerQuant(quant.scheme, quant.scale, quant.zero)
    assert torch.equal(pack_float_layer(qdq, bare)["weight_scale"].float(), tensors["weight_scale"].float())
    assert torch.equal(pack_float_layer(qdq, bare)["weight_packed"], tensors["weight_packed"])


MXFP4 = parse_scheme("MXFP4", act_bits=16)


@pytest.mark.parametrize("fmt", ["auto_gptq", "auto_awq", "auto_round:auto_gptq"])
def test_a_float_scheme_is_refused_by_integer_formats_naming_the_formats_that_can(fmt) -> None:
    with pytest.raises(
        SchemeError,
        match=rf"mx_fp 4-bit.*'{fmt}'.*formats that can store it: \['auto_round', 'llm_compressor'\]",
    ):
        check_schemes(MXFP4, None, fmt)


def test_mx_fp_6_bit_is_refused_saying_that_no_format_stores_it() -> None:
    with pytest.raises(SchemeError, match=r"mx_fp 6-bit.*'llm_compressor'.*can store it: \[\] \(none"):
        check_schemes(MXFP4.replace(bits=6), None, "llm_compressor")


def test_llm_compressor_refuses_int_per_tensor_naming_the_formats_that_store_it() -> None:
    with pytest.raises(SchemeError, match=r"int per-tensor.*formats that can store it: \['auto_round'"):
        check_schemes(parse_scheme("W4A16", group_size=0), None, "llm_compressor")


def test_a_float_group_that_does_not_divide_the_width_is_refused_before_tuning(tiny_llama) -> None:
    plan = resolve(tiny_llama, parse_scheme("FPW8A16", group_size=64))  # 96 inputs: a partial group
    with pytest.raises(SchemeError, match=r"q_proj: fp group_size 64 on 96 inputs.*divide the input width"):
        check_plan(tiny_llama, plan, "llm_compressor")


def test_quantize_and_save_refuses_mxfp4_in_gptq_before_tuning(tmp_path, tiny_llama, monkeypatch) -> None:
    import autoround.runner as runner

    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("quantizing must not start"))
    rounder = AutoRound(tiny_llama, None, scheme=MXFP4, iters=0)
    with pytest.raises(
        SchemeError, match=r"'auto_gptq'.*formats that can store it: \['auto_round', 'llm_compressor'\]"
    ):
        rounder.quantize_and_save(tmp_path / "out", format="auto_gptq")
    assert not (tmp_path / "out").exists()


def test_quantize_and_save_writes_nvfp4_through_the_public_api(tmp_path, tiny_llama) -> None:
    out = AutoRound(
        tiny_llama, None, scheme=parse_scheme("NVFP4", act_bits=16), iters=0, disable_opt_rtn=True
    ).quantize_and_save(tmp_path / "out", format="llm_compressor")
    config = json.loads((Path(out) / "config.json").read_text())["quantization_config"]
    assert config["format"] == "nvfp4-pack-quantized"
    assert config["config_groups"]["group_0"]["weights"]["strategy"] == "tensor_group"


def test_a_resumed_block_keeps_the_nvfp4_global_scale(tmp_path, tiny_llama) -> None:
    from autoround.algorithms.signround_blocks import BlockReport
    from autoround.resume import ResumeStore

    block, prefix = tiny_llama.model.layers[0], "model.layers.0"
    layer = block.self_attn.q_proj
    qdq, quant = quantize_weight(layer.weight.detach(), parse_scheme("NVFP4", act_bits=16))
    with torch.no_grad():
        layer.weight.copy_(qdq)
    store = ResumeStore(tmp_path / "out", {"test": True})
    try:
        report = BlockReport(prefix, 1, 0.0, 0.0, 0, 0.0)
        store.save_block(0, block, prefix, {f"{prefix}.self_attn.q_proj": quant.cpu()}, report)
        restored = store.restore(0, block, prefix)
    finally:
        store.close()
    assert restored is not None
    kept = restored[f"{prefix}.self_attn.q_proj"]
    assert kept.global_scale is not None and quant.global_scale is not None
    assert torch.equal(kept.global_scale, quant.global_scale) and torch.equal(kept.scale, quant.scale)
