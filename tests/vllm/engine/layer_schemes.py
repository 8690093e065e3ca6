"""Run in the vLLM venv: serve checkpoints one after another; per checkpoint, dump the scheme bits
each engine Linear was built with, the prompt's logprobs and greedy tokens with their logprobs.

Usage: ``python layer_schemes.py REQUEST.json RESULT.json``. The request holds
``{"checkpoints": [path, ...], "prompt": [token ids], "max_tokens": N, "llm_kwargs": {...}}``.
The result holds, per checkpoint: the engine's quantization method, ``layers`` (engine layer name
-> bits of its scheme, or 16 for a layer served unquantized), ``prompt_logprobs`` (each prompt
token given the ones before it), ``token_ids`` and ``logprobs`` of the greedy continuation.
One process serves them all (the engine core in-process, so the model can be inspected).
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import Any


def layer_bits(model: Any) -> dict[str, int]:
    from vllm.model_executor.layers.linear import LinearBase

    found = {}
    for name, module in model.named_modules():
        if isinstance(module, LinearBase):
            scheme = getattr(module.quant_method, "scheme", None)
            found[name] = 16 if scheme is None else int(scheme.bits)
    return found


def serve(checkpoint: str, request: dict[str, Any]) -> dict[str, Any]:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    llm = LLM(model=checkpoint, **request.get("llm_kwargs", {}))
    layers = llm.apply_model(layer_bits)[0]
    prompt = request["prompt"]
    params = SamplingParams(
        temperature=0.0, max_tokens=request["max_tokens"], logprobs=0, prompt_logprobs=0, ignore_eos=True
    )
    out = llm.generate([TokensPrompt(prompt_token_ids=prompt)], params, use_tqdm=False)[0]
    completion = out.outputs[0]
    ids = list(completion.token_ids)
    prompt_steps = zip(out.prompt_logprobs[1:], prompt[1:], strict=True)
    result = {
        "quantization": llm.llm_engine.vllm_config.model_config.quantization,
        "layers": layers,
        "prompt_logprobs": [step[t].logprob for step, t in prompt_steps],
        "token_ids": ids,
        "logprobs": [step[t].logprob for step, t in zip(completion.logprobs, ids, strict=True)],
    }
    del llm
    gc.collect()
    return result


def main(request_path: str, result_path: str) -> None:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the engine core here: apply_model sees the model
    request = json.loads(Path(request_path).read_text())
    results = {path: serve(path, request) for path in request["checkpoints"]}
    Path(result_path).write_text(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:3])
