"""Our SGLang method serves ``auto_round`` float checkpoints (MXFP4 and NVFP4 with act_bits=16,
FPW8A16, FP8 per channel) inside SGLang 0.5.23's own code, mirroring tests/vllm/test_vllm_float.py.

SGLang's engine does not start on this machine (docs/sglang.md; test_sglang_serving.py checks
that it still fails there, before any of our code runs), so ``engine/float_model.py`` runs the
part of serving that is ours: SGLang's ``ModelConfig`` picks ``autoround`` for the checkpoint,
SGLang's fused linear layers are built with our config and load the stored tensors through
SGLang's weight loaders, our float method dequantizes them (each fused part with its own
scales), and a transformers Llama runs with those layers in place of its Linears.

The model is the tests' tiny random Llama, float32, quantized with RTN keeping each layer's own
NVFP4 global scale, so the q/k/v and gate/up parts SGLang fuses carry different ones (checked
in tests/vllm/test_vllm_float.py). The reference is the in-memory quantized model (its weights
are the quantize-dequantize values), run in float32 by transformers in the workspace: the
dense weights SGLang's layers hold must equal its weights, the greedy tokens be its tokens and
the prompt logprobs close to its own. One SGLang process serves the four checkpoints.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from sglang_harness import run_json, sglang_python
from tiny_models import TINY_LLAMA, build_model
from transformers import LlamaConfig

import autoround
import autoround.dtypes.nv_fp as nv_fp

pytestmark = pytest.mark.integration

PROMPT = [1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]
NEW_TOKENS = 8
#: name -> (preset, overrides), as in the vLLM test.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "mxfp4_a16": ("MXFP4", {"act_bits": 16}),
    "nvfp4_a16": ("NVFP4", {"act_bits": 16}),
    "fpw8a16": ("FPW8A16", {}),
    "fp8_per_channel": ("FPW8A16", {"group_size": -1}),
}
#: Dense weights: NVFP4's SGLang-side product ``e2m1 * (block / global)`` may differ from the
#: in-memory qdq value by the float32 rounding of that product (relative 2^-24 a step).
WEIGHT_TOL = {"nvfp4_a16": 1e-6}
#: Prompt logprobs: float32 on both sides around the same weights; only the torch builds and
#: the fused product's summation differ.
LOGPROB_TOL = 1e-4
LINEARS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")


def _quantized(case: str) -> Any:
    preset, overrides = CASES[case]
    model = build_model(LlamaConfig(**TINY_LLAMA))
    with pytest.MonkeyPatch.context() as mp:
        # each layer's own NVFP4 global scale (RTN gives fused parts their group's, as Intel
        # does): the parts SGLang fuses then differ, so one scale per fused layer would be wrong
        own = nv_fp.global_scale
        mp.setattr(nv_fp, "global_scale", lambda w, amax=None: own(w))
        return autoround.quantize(model, preset, progress=False, **overrides)


def _reference(model: torch.nn.Module) -> tuple[list[int], list[float]]:
    """Greedy tokens (full forwards, no cache) and prompt logprobs of the in-memory model."""
    model = model.float().eval()
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        logits = model(ids).logits[0]
        logprobs = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
        tokens: list[int] = []
        for _ in range(NEW_TOKENS):
            tokens.append(int(model(ids).logits[0, -1].argmax()))
            ids = torch.cat([ids, torch.tensor([[tokens[-1]]])], dim=1)
    return tokens, logprobs.tolist()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> tuple[dict[str, Any], dict[str, tuple[list[int], list[float]]]]:
    """What the SGLang process reported (per case, and its refusals), and per case the in-memory
    model's tokens and logprobs."""
    sglang_python()  # skip before building anything when there is no venv
    tmp = tmp_path_factory.mktemp("sglang_float")
    checkpoints, references = {}, {}
    for name in CASES:
        qm = _quantized(name)
        path = autoround.save(qm, tmp / name, format="auto_round")
        weights = {
            f"{module_name}.weight": module.weight.detach().float().contiguous()
            for module_name, module in qm.model.named_modules()
            if isinstance(module, torch.nn.Linear) and ".layers." in module_name
        }
        save_file(weights, tmp / f"{name}_reference.safetensors")
        checkpoints[name] = {"path": str(path), "reference": str(tmp / f"{name}_reference.safetensors")}
        references[name] = _reference(qm.model)
    references["dense"] = _reference(build_model(LlamaConfig(**TINY_LLAMA)))
    request = {"checkpoints": checkpoints, "prompt": PROMPT, "new_tokens": NEW_TOKENS}
    (tmp / "request.json").write_text(json.dumps(request))
    return run_json("float_model.py", str(tmp / "request.json"), tmp=tmp, timeout=600), references


@pytest.mark.parametrize("name", list(CASES))
def test_sglang_layers_serve_the_float_checkpoint_with_the_in_memory_models_tokens(served, name) -> None:
    report, references = served
    result, (tokens, logprobs) = report[name], references[name]
    assert result["quantization"] == "autoround"
    assert set(result["layers"]) == {f"model.layers.{i}.{n}" for i in range(2) for n in LINEARS}
    for layer, seen in result["layers"].items():
        assert seen["method"] == "AutoRoundSglangFloatLinearMethod", (layer, seen)
        for part, err in seen["max_weight_err"].items():
            assert err is not None and err <= WEIGHT_TOL.get(name, 0.0), (name, layer, part, err)
    assert result["tokens"] == tokens
    gap = max(abs(a - b) for a, b in zip(result["logprobs"], logprobs, strict=True))
    assert gap < LOGPROB_TOL, f"{name}: prompt logprobs differ from the in-memory model's by {gap:.2e}"


@pytest.mark.parametrize("name", list(CASES))
def test_the_logprob_check_tells_the_quantized_model_from_the_dense_one(served, name) -> None:
    """The premise of the tolerance: quantization moves the prompt logprobs far beyond it (the
    tiny random model's greedy tokens barely move, so the logprobs carry the comparison)."""
    _, references = served
    quantized, dense = references[name][1], references["dense"][1]
    assert max(abs(a - b) for a, b in zip(quantized, dense, strict=True)) > 10 * LOGPROB_TOL


def test_activation_quantization_float_experts_and_lm_head_stay_refused(served) -> None:
    """MXFP4 weights with FP8 per-token activations are refused when SGLang reads the config;
    quantized MoE experts and a quantized lm_head when SGLang asks for their method, each naming
    what is not served."""
    refused = served[0]["refusals"]
    assert "act_bits=8" in refused["act_bits"] and "weight-only" in refused["act_bits"], refused
    assert refused["experts"].startswith("model.layers.0.mlp.experts: quantized MoE experts"), refused
    assert "mx_fp" in refused["experts"] and "not served" in refused["experts"], refused
    assert refused["lm_head"].startswith("lm_head: a quantized lm_head (W4G32 sym mx_fp)"), refused
