"""Run in the SGLang venv: serve a checkpoint with ``sgl.Engine(model_path=..., device="cpu")``.

Usage: ``serve.py CHECKPOINT REQUEST_JSON RESULT_JSON``. The request holds ``prompts`` (token
ids) and ``max_tokens``; the result, written only when the engine ran, holds per prompt the greedy
``token_ids`` and their ``logprobs``, and the method SGLang chose. When SGLang cannot start the
engine, its processes print the error and this one exits non-zero (SGLang kills its own parent
process when a child fails).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def main() -> None:
    checkpoint, request_path, result_path = sys.argv[1:]
    import sglang as sgl

    request = json.loads(Path(request_path).read_text())
    engine = sgl.Engine(model_path=checkpoint, device="cpu", dtype="float32")
    try:
        outputs: list[dict[str, Any]] = engine.generate(
            input_ids=request["prompts"],
            sampling_params={"temperature": 0.0, "max_new_tokens": request["max_tokens"]},
            return_logprob=True,
        )
        results = [
            {
                "token_ids": [t[1] for t in o["meta_info"]["output_token_logprobs"]],
                "logprobs": [t[0] for t in o["meta_info"]["output_token_logprobs"]],
            }
            for o in outputs
        ]
        quantization = engine.get_server_info().get("quantization")
    finally:
        engine.shutdown()
    Path(result_path).write_text(json.dumps({"outputs": results, "quantization": quantization}))


if __name__ == "__main__":
    main()
