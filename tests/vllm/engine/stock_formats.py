"""Run in the vLLM venv: serve checkpoints of other formats (GPTQ, AWQ, compressed-tensors) with
stock vLLM, one after another, and record what each gave: its prompt logprobs, or where it failed.

Usage: ``python stock_formats.py REQUEST.json RESULT.json``. The request holds
``{"checkpoints": [path, ...], "prompt": [token ids], "llm_kwargs": {...}}``. The result holds, per
checkpoint, the quantization method vLLM chose and the prompt's logprobs, or the stage that failed
(``load``: building the engine; ``forward``: the first generate) with the error's type and
innermost message. One process serves them all, so vLLM's import is paid once.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import Any


def serve(checkpoint: str, prompt: list[int], llm_kwargs: dict[str, Any]) -> dict[str, Any]:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    try:
        llm = LLM(model=checkpoint, **llm_kwargs)
    except Exception as err:  # what fails is the result under test
        return {"stage": "load", "error": type(err).__name__, "message": _root_message(err)}
    method = llm.llm_engine.vllm_config.model_config.quantization
    try:
        params = SamplingParams(max_tokens=1, prompt_logprobs=0)
        out = llm.generate([TokensPrompt(prompt_token_ids=prompt)], params, use_tqdm=False)[0]
    except Exception as err:
        return {
            "stage": "forward",
            "quantization": method,
            "error": type(err).__name__,
            "message": _root_message(err),
        }
    finally:
        del llm
        gc.collect()
    logprobs = [step[token].logprob for step, token in zip(out.prompt_logprobs[1:], prompt[1:], strict=True)]
    return {"quantization": method, "logprobs": logprobs}


def _root_message(err: BaseException) -> str:
    """The messages of the error and its causes (engine start-up wraps the worker's error)."""
    messages = [f"{type(err).__name__}: {err}"]
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
        messages.append(f"{type(err).__name__}: {err}")
    return " | ".join(messages)[:2000]


def main(request_path: str, result_path: str) -> None:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # errors reach us as the exceptions themselves
    request = json.loads(Path(request_path).read_text())
    results = {}
    for path in request["checkpoints"]:
        results[path] = serve(path, request["prompt"], request.get("llm_kwargs", {}))
        Path(result_path).write_text(json.dumps(results))  # what was learnt survives a crash


if __name__ == "__main__":
    main(*sys.argv[1:3])
