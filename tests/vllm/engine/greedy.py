"""Run in the vLLM venv: serve one checkpoint with ``LLM(model=path)`` and dump greedy tokens.

Usage: ``python greedy.py CHECKPOINT REQUEST.json RESULT.json``. The request holds
``{"prompts": [[token ids], ...], "max_tokens": N, "llm_kwargs": {...}}``; the result holds, per
prompt, the generated token ids, each one's logprob, and the text, plus the engine's
quantization method and start time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(checkpoint: str, request_path: str, result_path: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    request = json.loads(Path(request_path).read_text())
    start = time.perf_counter()
    llm = LLM(model=checkpoint, **request.get("llm_kwargs", {}))
    started = time.perf_counter() - start
    params = SamplingParams(temperature=0.0, max_tokens=request["max_tokens"], logprobs=1, ignore_eos=True)
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in request["prompts"]]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    results = []
    for out in outputs:
        completion = out.outputs[0]
        ids = list(completion.token_ids)
        logprobs = [step[token].logprob for step, token in zip(completion.logprobs, ids, strict=True)]
        results.append({"token_ids": ids, "logprobs": logprobs, "text": completion.text})
    method = llm.llm_engine.vllm_config.model_config.quantization
    Path(result_path).write_text(json.dumps({"quantization": method, "start_s": started, "outputs": results}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
