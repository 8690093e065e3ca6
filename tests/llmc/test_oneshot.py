"""``oneshot`` with SignRoundModifier writes compressed-tensors' pack-quantized format, whose
weights are, by compressed-tensors' own unpacking and dequantization, the tuned weights."""

from __future__ import annotations

import json

import pytest
import torch
from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
from compressed_tensors.quantization.lifecycle.forward import dequantize
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from autoround_llmc import SignRoundModifier

pytestmark = pytest.mark.integration

LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
LAYERS += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _modifier(**overrides) -> SignRoundModifier:
    settings = {"scheme": "W4A16", "iters": 20, "batch_size": 4, "ignore": ["lm_head"]}
    return SignRoundModifier(**{**settings, **overrides})


def test_each_block_beats_rtn_and_the_checkpoint_generates_the_same_text(
    tmp_path, load_llama, run_oneshot, tiny_tokenizer
) -> None:
    model = load_llama()
    modifier = _modifier()
    run_oneshot(model, [modifier])

    reports = modifier.block_reports
    assert [(r.name, r.layers) for r in reports] == [("model.layers.0", 7), ("model.layers.1", 7)]
    for report in reports:
        assert report.tuned_loss < report.rtn_loss, report

    torch.manual_seed(5)
    prompt = torch.randint(3, 128, (1, 6))
    with torch.no_grad():
        tuned_text = tiny_tokenizer.decode(model.generate(prompt, max_new_tokens=16, do_sample=False)[0])
        tuned_logits = model(prompt).logits

    out = tmp_path / "w4a16"
    model.save_pretrained(out, save_compressed=True)
    tiny_tokenizer.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert (config["quant_method"], config["format"]) == ("compressed-tensors", "pack-quantized")
    tensors = load_file(out / "model.safetensors")
    assert "model.layers.0.mlp.down_proj.weight_packed" in tensors
    assert "model.layers.0.mlp.down_proj.weight" not in tensors

    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        reloaded = loaded.generate(prompt, max_new_tokens=16, do_sample=False)
        torch.testing.assert_close(loaded(prompt).logits, tuned_logits, rtol=0, atol=1e-5)
    assert tiny_tokenizer.decode(reloaded[0]) == tuned_text


@pytest.mark.parametrize(
    ("dtype", "scheme"),
    [(torch.float32, "W4A16"), (torch.bfloat16, "W4A16"), (torch.float32, "W4A16_ASYM")],
)
def test_compressed_tensors_dequantizes_the_checkpoint_to_the_tuned_weights(
    tmp_path, load_llama, run_oneshot, dtype, scheme
) -> None:
    model = load_llama(dtype)
    run_oneshot(model, [_modifier(scheme=scheme, iters=4)])
    tuned = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith(".weight")}
    model.save_pretrained(tmp_path / "ckpt", save_compressed=True)
    tensors = load_file(tmp_path / "ckpt" / "model.safetensors")

    for block in range(2):
        for layer in LAYERS:
            name = f"model.layers.{block}.{layer}"
            args = model.get_submodule(name).quantization_scheme.weights
            shape = tuple(tensors[f"{name}.weight_shape"].tolist())
            codes = unpack_from_int32(tensors[f"{name}.weight_packed"], args.num_bits, shape)
            zero = None
            if not args.symmetric:
                packed_zero = tensors[f"{name}.weight_zero_point"]
                groups = tensors[f"{name}.weight_scale"].shape
                zero = unpack_from_int32(packed_zero, args.num_bits, groups, packed_dim=0)
            scale = tensors[f"{name}.weight_scale"]
            # Symmetric scales keep autoround's (Intel's) sign: the largest magnitude maps to -8.
            assert not args.symmetric or bool((scale < 0).any()), name
            weight = dequantize(codes, scale, zero, args, dtype=dtype)
            assert torch.equal(weight, tuned[f"{name}.weight"]), name


def test_the_tuned_model_is_closer_to_full_precision_than_llm_compressors_rtn(
    load_llama, run_oneshot, calibration
) -> None:
    from llmcompressor.modifiers.quantization import QuantizationModifier

    ids = torch.tensor(calibration["input_ids"])
    with torch.no_grad():
        reference = load_llama()(ids).logits
        rtn = run_oneshot(load_llama(), [QuantizationModifier(scheme="W4A16", ignore=["lm_head"])])(
            ids
        ).logits
        tuned = run_oneshot(load_llama(), [_modifier()])(ids).logits
    rtn_error = torch.nn.functional.mse_loss(rtn, reference)
    tuned_error = torch.nn.functional.mse_loss(tuned, reference)
    assert tuned_error < rtn_error, (tuned_error, rtn_error)
