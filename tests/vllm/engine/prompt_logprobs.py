"""Run in the vLLM venv: serve checkpoints one after another and dump each prompt's logprobs.

Usage: ``python prompt_logprobs.py REQUEST.json RESULT.json``. The request holds
``{"checkpoints": [path, ...], "prompt": [token ids], "llm_kwargs": {...}}``. The result holds,
per checkpoint, the engine's quantization method and the logprob of each prompt token given the
ones before it, or the error the engine refused the checkpoint with (its type and message):
one process serves them all, so the engine's import and start-up cost is paid once.
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
    except Exception as err:  # the refusal is the result under test
        return {"error": type(err).__name__, "message": _root_message(err)}
    params = SamplingParams(max_tokens=1, prompt_logprobs=0)
    out = llm.generate([TokensPrompt(prompt_token_ids=prompt)], params, use_tqdm=False)[0]
    logprobs = [step[token].logprob for step, token in zip(out.prompt_logprobs[1:], prompt[1:], strict=True)]
    method = llm.llm_engine.vllm_config.model_config.quantization
    del llm
    gc.collect()
    return {"quantization": method, "logprobs": logprobs}


def _root_message(err: BaseException) -> str:
    """The message of the innermost cause: engine start-up wraps the worker's error."""
    messages = [str(err)]
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
        messages.append(f"{type(err).__name__}: {err}")
    return " | ".join(messages)


def main(request_path: str, result_path: str) -> None:
    # The engine core in this process: a refusal raised while building the model reaches us
    # as the exception itself, not as "engine core initialization failed".
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    request = json.loads(Path(request_path).read_text())
    results = {
        path: serve(path, request["prompt"], request.get("llm_kwargs", {})) for path in request["checkpoints"]
    }
    Path(result_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:3])
