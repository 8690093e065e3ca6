"""The vLLM plugin's side of the loader round trips (``tests/conformance``): tiny checkpoints of
every scheme shape served by ``LLM(model=path)`` give core's logprobs, and what the plugin does
not serve (a quantized lm_head, quantized MoE experts) is refused naming the layer, never served
wrong.

All checkpoints are served by one vLLM process (``engine/prompt_logprobs.py``), one engine
after another, so the suite costs one engine import (about a minute on 2 cores) and seconds per
checkpoint. The reference is core's packed loader (``load_quantized``), in fp32 like the engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import TINY_LLAMA, TINY_QWEN3_MOE, build_model, build_tokenizer
from transformers import LlamaConfig, Qwen3Config, Qwen3MoeConfig
from vllm_harness import run_engine, vllm_python

import autoround

pytestmark = pytest.mark.integration

PROMPT = [1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]
#: fp32 in both engines around the same int codes: only summation order differs.
LOGPROB_TOL = 2e-3

#: name -> (model fixture, quantize arguments). Served: every packable bit width, sym and asym,
#: per-group sizes that leave a partial last group (96 inputs), mixed bits, a 16-bit layer.
SERVED: dict[str, tuple[str, dict[str, Any]]] = {
    "w4_g128": ("tiny_llama", {"scheme": "W4A16"}),
    "w4_g32_asym": ("tiny_llama", {"scheme": "W4A16G32", "sym": False}),
    "w3_g64_asym": ("tiny_qwen3", {"scheme": "W3A16G64", "sym": False}),
    "w2_g64": ("tiny_llama", {"scheme": "W2A16G64"}),
    "w8_g128": ("tiny_qwen3", {"scheme": "W8A16"}),
    "mixed": ("tiny_llama", {"scheme": "W4A16", "layer_config": {"mlp.down_proj": {"bits": 8}}}),
    "o_proj_16": ("tiny_qwen3", {"scheme": "W4A16", "layer_config": {"self_attn.o_proj": {"bits": 16}}}),
}
#: name -> (model fixture, quantize arguments, what the refusal must name).
REFUSED: dict[str, tuple[str, dict[str, Any], str]] = {
    "lm_head": ("tiny_qwen3", {"scheme": "W4A16", "quant_lm_head": True}, "lm_head"),
}


#: The conftest's tiny models (tied llama, untied qwen3, qwen3-MoE), built once for the module.
MODELS = {
    "tiny_llama": lambda: build_model(LlamaConfig(**TINY_LLAMA)),
    "tiny_qwen3": lambda: build_model(Qwen3Config(**{**TINY_LLAMA, "tie_word_embeddings": False})),
    "tiny_qwen3_moe": lambda: build_model(Qwen3MoeConfig(**TINY_QWEN3_MOE)),
}


def _save(model: torch.nn.Module, kwargs: dict[str, Any], path: Path) -> Path:
    kwargs = dict(kwargs)
    scheme = kwargs.pop("scheme")
    qm = autoround.quantize(model, scheme, progress=False, tokenizer=build_tokenizer(), **kwargs)
    return autoround.save(qm, path)


def _core_logprobs(path: Path) -> list[float]:
    model = autoround.load_quantized(path, backend="torch")
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT])).logits[0].float()
    logprobs = torch.log_softmax(logits[:-1], dim=-1)
    return logprobs.gather(1, torch.tensor(PROMPT[1:])[:, None])[:, 0].tolist()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """name -> (checkpoint, what vLLM gave), for every case of SERVED and REFUSED, in one process."""
    vllm_python()  # skip before building anything when there is no venv
    tmp = tmp_path_factory.mktemp("vllm_round_trip")
    paths: dict[str, Path] = {}
    cases = {name: case[:2] for name, case in {**REFUSED, **SERVED}.items()}
    for name, (fixture, kwargs) in cases.items():
        paths[name] = _save(MODELS[fixture](), kwargs, tmp / name)
    request_file, result_file = tmp / "request.json", tmp / "result.json"
    llm_kwargs = {"enforce_eager": True, "max_model_len": 64, "dtype": "float32", "seed": 0}
    checkpoints = [str(p) for p in paths.values()]
    request = {"checkpoints": checkpoints, "prompt": PROMPT, "llm_kwargs": llm_kwargs}
    request_file.write_text(json.dumps(request))
    run_engine("prompt_logprobs.py", str(request_file), str(result_file), timeout=1200)
    results = json.loads(result_file.read_text())
    return {name: (path, results[str(path)]) for name, path in paths.items()}


@pytest.mark.parametrize("name", list(SERVED))
def test_vllm_serves_the_checkpoint_with_cores_logprobs(served, name):
    path, result = served[name]
    assert "error" not in result, f"vLLM refused {name}: {result}"
    assert result["quantization"] == "autoround"
    gap = max(abs(a - b) for a, b in zip(result["logprobs"], _core_logprobs(path), strict=True))
    assert gap < LOGPROB_TOL, f"{name}: prompt logprobs differ from core's by up to {gap:.2e}"


@pytest.mark.parametrize("name", list(REFUSED))
def test_vllm_refuses_what_the_plugin_does_not_serve_naming_it(served, name):
    _, result = served[name]
    assert result.get("error") == "NotImplementedError", f"{name} was not refused: {result}"
    assert REFUSED[name][2] in result["message"]


def test_vllm_refuses_quantized_moe_experts_naming_them(tmp_path):
    """In its own engine process: vLLM builds a MoE model in-process only after its expert-parallel
    group exists, which the one-process engine of ``prompt_logprobs.py`` never makes."""
    vllm_python()
    path = _save(MODELS["tiny_qwen3_moe"](), {"scheme": "W4A16"}, tmp_path / "moe")
    request = tmp_path / "request.json"
    llm_kwargs = {"enforce_eager": True, "max_model_len": 64}
    request.write_text(json.dumps({"prompts": [PROMPT], "max_tokens": 1, "llm_kwargs": llm_kwargs}))
    proc = run_engine("greedy.py", str(path), str(request), str(tmp_path / "out.json"), expect_failure=True)
    refusal = "NotImplementedError: model.layers.0.mlp.experts: quantized MoE experts"
    assert refusal in proc.stdout + proc.stderr
