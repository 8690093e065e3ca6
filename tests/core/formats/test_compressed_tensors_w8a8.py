"""W8A8 (INT8 and FP8 weights with dynamic per-token activations) quantized by RTN and saved in
the ``llm_compressor`` format, checked by compressed-tensors and transformers: compressed-tensors'
``ModelCompressor`` decompresses our checkpoint to the in-memory weights exactly, the config
carries compressed-tensors' own ``W8A8`` / ``FP8_DYNAMIC`` arguments, and transformers' reading
of the checkpoint (its activations quantized by compressed-tensors' formula) generates the same
greedy tokens as our in-memory model (its activations quantized by Intel's, through the hooks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import TINY_LLAMA, build_model
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

import autoround
from autoround.formats.preflight import check_schemes
from autoround.nn.act_hooks import act_kind_of, detach_act_quant
from autoround.schemes import PRESETS, parse_scheme, require_built

FP32 = torch.float32
#: case -> (scheme, keywords, compressed-tensors preset, layout, weight tensors' dtypes).
CASES: dict[str, tuple[str, dict[str, Any], str, str, dict[str, torch.dtype]]] = {
    "int8": ("INT8_W8A8", {}, "W8A8", "int-quantized", {"weight": torch.int8, "weight_scale": torch.float16}),
    "fp8": (
        "FP8_STATIC",
        {"act_dynamic": True, "act_group_size": -1},
        "FP8_DYNAMIC",
        "float-quantized",
        {"weight": torch.float8_e4m3fn, "weight_scale": FP32},
    ),
}
PROMPT = [1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]


def _model() -> torch.nn.Module:
    # initialised wider than by default, so greedy choices are far from ties
    return build_model(LlamaConfig(**{**TINY_LLAMA, "initializer_range": 0.1}))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    made: dict[str, tuple[Path, Any]] = {}

    def make(case: str) -> tuple[Path, Any]:
        if case not in made:
            scheme, kwargs = CASES[case][:2]
            qm = autoround.quantize(_model(), scheme, progress=False, **kwargs)
            path = tmp_path_factory.mktemp("ct-w8a8") / "ckpt"
            made[case] = autoround.save(qm, path, format="llm_compressor"), qm
        return made[case]

    return make


def _decompressed(path: Path) -> torch.nn.Module:
    """The checkpoint as compressed-tensors loads it (see test_compressed_tensors_float)."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config

    config = QuantizationConfig.model_validate(
        json.loads((path / "config.json").read_text())["quantization_config"]
    )
    skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=FP32)
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
    loaded = _decompressed(path)
    for name in qm.layers:
        assert torch.equal(loaded.get_submodule(name).weight.to(FP32), qm.model.get_submodule(name).weight), (
            name
        )


@pytest.mark.parametrize("case", list(CASES))
def test_the_config_is_compressed_tensors_own_preset_and_layout(exported, case) -> None:
    from compressed_tensors.quantization import preset_name_to_scheme

    path, qm = exported(case)
    _, _, preset, layout, dtypes = CASES[case]
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    assert config["format"] == layout
    (group,) = config["config_groups"].values()
    theirs = preset_name_to_scheme(preset, ["Linear"])
    assert group["format"] == layout
    assert group["input_activations"] == theirs.input_activations.model_dump(mode="json")
    assert group["weights"] == theirs.weights.model_dump(mode="json")
    tensors = load_file(path / "model.safetensors")
    for name in qm.layers:
        stored = {k.removeprefix(f"{name}."): v for k, v in tensors.items() if k.startswith(f"{name}.")}
        assert {k: v.dtype for k, v in stored.items()} == dtypes, name
        assert stored["weight_scale"].shape == (qm.model.get_submodule(name).weight.shape[0], 1)


@pytest.mark.parametrize("case", list(CASES))
def test_the_in_memory_model_quantizes_each_layers_input(exported, case) -> None:
    _, qm = exported(case)
    kind = "int8" if case == "int8" else "fp8"
    assert all(act_kind_of(qm.model.get_submodule(name)) == kind for name in qm.layers)
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        hooked = qm.model(ids).logits
        layer = qm.model.get_submodule(next(iter(qm.layers)))
        assert "weight" in dict(layer.named_parameters())  # names and state dict unchanged
        removed = detach_act_quant(qm.model)
        plain = qm.model(ids).logits
    from autoround.nn.act_hooks import attach_act_quant

    assert attach_act_quant(qm.model, qm.plan.quantized()) == removed == len(qm.layers)
    assert not torch.equal(hooked, plain)  # the hooks do change the activations


def _prompt_logprobs(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]


def _ct_int8(x: torch.Tensor, kind: str) -> torch.Tensor:
    """compressed-tensors' dynamic per-token int8: ``absmax / 127.5``, in the input's dtype."""
    scale = x.abs().amax(-1, keepdim=True) / 127.5
    scale = torch.where(scale == 0, torch.finfo(x.dtype).eps, scale)
    return (x / scale).round().clamp(-128, 127) * scale


@pytest.mark.parametrize("case", list(CASES))
def test_transformers_generates_the_in_memory_models_greedy_tokens(exported, case, monkeypatch) -> None:
    path, qm = exported(case)
    ids = torch.tensor([PROMPT])
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=FP32)
    with torch.no_grad():
        ours = qm.model.generate(ids, max_new_tokens=12, do_sample=False)
        theirs = loaded.generate(ids, max_new_tokens=12, do_sample=False)
    assert ours.tolist() == theirs.tolist()
    gap = (_prompt_logprobs(qm.model) - _prompt_logprobs(loaded)).abs().max().item()
    if case == "fp8":  # the same scales (float32, absmax / 448) and elements: the same logits
        assert gap == 0.0
        return
    # int8: Intel's scale is absmax/128 in float16, compressed-tensors' absmax/127.5: close, not
    # equal; with compressed-tensors' formula in our hooks, the two models agree
    assert 0 < gap < 0.05, gap
    monkeypatch.setattr("autoround.nn.act_hooks.qdq_activation", _ct_int8)
    assert torch.allclose(_prompt_logprobs(qm.model), _prompt_logprobs(loaded), atol=1e-5)


def test_static_activations_of_a_kind_not_built_are_refused_naming_the_field() -> None:
    # static FP8 per tensor (FP8_STATIC) is built; static MX activations are not
    with pytest.raises(NotImplementedError, match=r"act_dynamic=False.*calibrated.*use act_dynamic=True"):
        require_built(parse_scheme("MXFP4", act_dynamic=False))


def test_four_bit_int_activations_are_stored_by_auto_round_alone() -> None:
    # Intel's INT4 (W4A4) exports only to its fake packing (auto_round:fake, dense quantized
    # weights); compressed-tensors has no W4A4 int layout that vLLM serves, so llm_compressor
    # refuses it naming the format that stores it
    require_built(PRESETS["INT4"])
    refusal = (
        r"act_bits=4, act_data_type='int'\) is not built for format\(s\) \['llm_compressor'\]"
        r".*can store it: \['auto_round'\]"
    )
    with pytest.raises(NotImplementedError, match=refusal):
        check_schemes(PRESETS["INT4"], None, "llm_compressor")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"act_group_size": 32}, "act_group_size=32"),
        ({"act_sym": False}, "act_sym=False"),
        ({"group_size": 128}, "group_size=128"),
        ({"act_data_type": "fp"}, "fp 8-bit activations go with fp 8-bit"),
    ],
)
def test_other_w8a8_variants_are_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(NotImplementedError, match=field):
        require_built(parse_scheme("INT8_W8A8", **overrides))


def test_fp8_block_with_its_activations_is_built() -> None:
    require_built(PRESETS["FP8_BLOCK"])  # 2-D weight tiles, dynamic FP8 activations per group of 128
    require_built(PRESETS["FP8_BLOCK"], "layer x", "signround")


def test_w8a8_with_an_algorithm_not_built_for_it_is_refused_naming_those_that_are() -> None:
    # SignRound tunes W8A8 (tests/core/algorithms/test_signround_activations.py); an algorithm
    # registered later is refused with activation schemes until it is built for them
    for built in ("rtn", "opt_rtn", "signround"):
        require_built(PRESETS["INT8_W8A8"], "layer x", built)
    with pytest.raises(
        NotImplementedError,
        match=r"layer x: scheme int 8-bit weights with int 8-bit activations.*with gptq is not built yet; "
        r"algorithms \['rtn', 'opt_rtn', 'signround'\] quantize this scheme",
    ):
        require_built(PRESETS["INT8_W8A8"], "layer x", "gptq")


@pytest.mark.parametrize("fmt", ["auto_round:auto_gptq", "auto_gptq", "auto_awq"])
def test_w8a8_is_refused_by_formats_without_activation_arguments(fmt: str) -> None:
    refusal = rf"not built for format\(s\) \['{fmt}'\].*can store it: \['auto_round', 'llm_compressor'\]"
    with pytest.raises(NotImplementedError, match=refusal):
        check_schemes(PRESETS["INT8_W8A8"], None, fmt)


def test_intels_iters_0_runs_optimized_rtn_with_the_activation_hooks(tmp_path) -> None:
    model = _model()
    ar = autoround.AutoRound(model, scheme="INT8_W8A8", iters=0, nsamples=2, seqlen=16)
    assert ar.run.algorithm == "opt_rtn"
    ar.quantize_and_save(tmp_path / "out", format="llm_compressor")
    config = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert config["format"] == "int-quantized"
    assert act_kind_of(model.get_submodule("model.layers.0.mlp.down_proj")) == "int8"
