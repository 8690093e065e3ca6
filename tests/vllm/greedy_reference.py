"""The reference side of the vLLM tests: the same checkpoint's greedy tokens in transformers.

Loaded through autoround-hf (``from_pretrained`` of the ``auto-round`` checkpoint, packed layers
on core's backend). Both engines compute in fp32 for the comparison: in bf16 two engines' rounding
differs enough to flip near-ties (seen: SmolLM2 W4A16 logits tied to bf16 resolution at a step,
and a 0.5-nat bf16 gap that is 0.2 nats in fp32), which would test bf16, not the plugin.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import autoround_hf  # noqa: F401  (takes transformers' auto-round entry)

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Water boils at a temperature of",
    "The three primary colors are",
]


def prompt_ids(checkpoint: Path, prompts: list[str] = PROMPTS) -> list[list[int]]:
    """Token ids of the prompts by the checkpoint's tokenizer (both engines get the same ids)."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    return [tokenizer(p)["input_ids"] for p in prompts]


def greedy_in_transformers(
    checkpoint: Path, prompts: list[list[int]], max_tokens: int, dtype: torch.dtype = torch.float32
) -> list[dict]:
    """Per prompt: greedy token ids and their logprobs (from raw logits) in transformers."""
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype).eval()
    results = []
    for ids in prompts:
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                output_logits=True, return_dict_in_generate=True, pad_token_id=0,
            )  # fmt: skip
        new = out.sequences[0, len(ids) :].tolist()
        logprobs = [
            torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(out.logits, new, strict=True)
        ]
        results.append({"token_ids": new, "logprobs": logprobs})
    return results


def agreement(ours: list[dict], reference: list[dict], tokens: int) -> tuple[int, float]:
    """(prompts whose first ``tokens`` greedy tokens are identical, largest logprob gap on those)."""
    same, gap = 0, 0.0
    for a, b in zip(ours, reference, strict=True):
        if a["token_ids"][:tokens] == b["token_ids"][:tokens]:
            same += 1
            gap = max(
                gap,
                *(abs(x - y) for x, y in zip(a["logprobs"][:tokens], b["logprobs"][:tokens], strict=True)),
            )
    return same, gap
