"""AutoScheme checkpoints of a tiny llama served by vLLM through our plugin: every engine Linear
is built at the bits the plan stored for it (vLLM's fused qkv_proj and gate_up_proj included,
which the search keeps on one scheme), and the engine's prompt logprobs and greedy tokens are
those of the same checkpoint loaded in transformers through autoround-hf (fp32 in both).

Two plans that really mix: 3.3 bits over W2A16G64,W4A16 and 6.0 over W4A16,W8A16; both served
by one vLLM process (``engine/layer_schemes.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import TINY_LLAMA, build_model, build_tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig
from vllm_harness import run_engine, vllm_python

from autoround import AutoRound, AutoScheme
from autoround.formats import checkpoint_spec
from autoround_hf import AutoRoundConfig

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:You passed `quantization_config`")]

PLANS = {"w2_w4": (3.3, "W2A16G64,W4A16"), "w4_w8": (6.0, "W4A16,W8A16")}
PROMPT = [1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]
MAX_TOKENS = 8
TEXTS = [" ".join(["the of and to in a is was for on as with by at"] * 6)] * 8
#: fp32 in both engines around the same int codes: only summation order differs.
LOGPROB_TOL = 2e-3
#: vLLM layer -> the checkpoint layers it holds (one scheme by the plan's construction).
ENGINE_PARTS = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "self_attn.o_proj": ("self_attn.o_proj",),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.down_proj": ("mlp.down_proj",),
}


def _save(avg_bits: float, options: str, path: Path) -> Path:
    auto = AutoScheme(avg_bits, options, nsamples=4, seqlen=32)
    rounder = AutoRound(
        build_model(LlamaConfig(**TINY_LLAMA)),
        build_tokenizer(),
        scheme=auto,
        dataset=TEXTS,
        nsamples=4,
        seqlen=32,
        iters=0,
        disable_opt_rtn=True,
    )
    return rounder.quantize_and_save(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """plan name -> (checkpoint, what vLLM gave), all plans in one engine process."""
    vllm_python()  # skip before building anything when there is no venv
    tmp = tmp_path_factory.mktemp("vllm_auto_scheme")
    paths = {name: _save(bits, options, tmp / name) for name, (bits, options) in PLANS.items()}
    request, result = tmp / "request.json", tmp / "result.json"
    llm_kwargs = {"enforce_eager": True, "max_model_len": 64, "dtype": "float32", "seed": 0}
    request.write_text(
        json.dumps(
            {
                "checkpoints": [str(p) for p in paths.values()],
                "prompt": PROMPT,
                "max_tokens": MAX_TOKENS,
                "llm_kwargs": llm_kwargs,
            }
        )
    )
    run_engine("layer_schemes.py", str(request), str(result), timeout=1200)
    results = json.loads(result.read_text())
    return {name: (path, results[str(path)]) for name, path in paths.items()}


def _stored_bits(path: Path) -> dict[str, int]:
    spec = checkpoint_spec(path)
    bits = {}
    for block in range(TINY_LLAMA["num_hidden_layers"]):
        for suffix in (part for parts in ENGINE_PARTS.values() for part in parts):
            scheme = spec.scheme_for(f"model.layers.{block}.{suffix}")
            bits[f"model.layers.{block}.{suffix}"] = 16 if scheme is None else scheme.bits
    return bits


@pytest.mark.parametrize("name", list(PLANS))
def test_vllm_builds_every_layer_at_the_bits_the_plan_stored(served, name) -> None:
    path, result = served[name]
    assert result["quantization"] == "autoround"
    stored = _stored_bits(path)
    assert len(set(stored.values())) == 2, stored  # the plan mixes its two options
    expected = {}
    for block in range(TINY_LLAMA["num_hidden_layers"]):
        for engine, parts in ENGINE_PARTS.items():
            bits = {stored[f"model.layers.{block}.{part}"] for part in parts}
            assert len(bits) == 1, f"{name}: block {block} {engine} parts stored at {bits}"
            expected[f"model.layers.{block}.{engine}"] = bits.pop()
    engine_layers = {k: v for k, v in result["layers"].items() if k.startswith("model.layers.")}
    assert engine_layers == expected


@pytest.mark.parametrize("name", list(PLANS))
def test_vllm_generates_what_transformers_computes_for_the_checkpoint(served, name) -> None:
    path, result = served[name]
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, quantization_config=AutoRoundConfig(backend="torch")
    )
    ids = torch.tensor([PROMPT + result["token_ids"]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    taken = logprobs.gather(1, ids[0, 1:, None])[:, 0]
    n = len(PROMPT) - 1
    prompt_gap = (taken[:n] - torch.tensor(result["prompt_logprobs"])).abs().max().item()
    assert prompt_gap < LOGPROB_TOL, f"{name}: prompt logprobs differ from transformers' by {prompt_gap:.2e}"
    generated_gap = (taken[n:] - torch.tensor(result["logprobs"])).abs().max().item()
    assert generated_gap < LOGPROB_TOL, f"{name}: generated logprobs differ by {generated_gap:.2e}"
    # Greedy: every generated token is transformers' most likely one (up to the tolerance on ties).
    best = logprobs[n:].max(dim=-1).values
    assert torch.all(taken[n:] >= best - LOGPROB_TOL), (taken[n:] - best).tolist()
    assert len(result["token_ids"]) == MAX_TOKENS
