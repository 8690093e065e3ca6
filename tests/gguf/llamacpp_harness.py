"""Runs inside the llama.cpp venv (tests/gguf/setup_venv.sh): llama.cpp's own code on our files.

Commands (JSON on stdout):

* ``quantize TYPE IN.npy OUT.npy [IMATRIX.npy]``: ``ggml_quantize_chunk`` (llama.cpp's quantizer,
  with an importance matrix when given) on float32 rows; the raw blocks are saved as uint8.
* ``generate MODEL.gguf PROMPT_IDS N``: load the model, greedy-decode ``N`` tokens after the
  comma-separated prompt ids; prints the ids, the text and the tensor types.
* ``logits MODEL.gguf PROMPT_IDS OUT.npy``: the logits at every position of the prompt.
* ``perplexity MODEL.gguf IDS.npy WINDOW``: perplexity of the token ids in non-overlapping windows
  (every token after the first of a window scored), llama.cpp's logits.
* ``model_quantize IN.gguf OUT.gguf FTYPE``: ``llama_model_quantize`` (llama-quantize) to an ftype
  (``LLAMA_FTYPE_MOSTLY_Q4_K_M`` ...), timed.
* ``tokenize MODEL.gguf TEXT``: llama.cpp's token ids of a text (no BOS added).

Nothing here imports our packages.
"""

from __future__ import annotations

import ctypes
import json
import math
import sys
import time
from pathlib import Path

import llama_cpp
import numpy as np


def _ggml() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def quantize(qtype: int, source: str, target: str, imatrix: str | None = None) -> dict:
    rows = np.ascontiguousarray(np.load(source), dtype=np.float32)
    nrows, per_row = rows.shape
    lib = _ggml()
    lib.ggml_quantize_init(qtype)
    row_bytes = lib.ggml_row_size(qtype, per_row)
    out = np.zeros((nrows, row_bytes), dtype=np.uint8)
    weights = None if imatrix is None else np.ascontiguousarray(np.load(imatrix), dtype=np.float32)
    lib.ggml_quantize_chunk(
        qtype,
        rows.ctypes.data,
        out.ctypes.data,
        0,
        nrows,
        per_row,
        None if weights is None else weights.ctypes.data,
    )
    np.save(target, out)
    return {"row_bytes": int(row_bytes)}


def _load(path: str, n_ctx: int = 512, logits_all: bool = False) -> llama_cpp.Llama:
    return llama_cpp.Llama(
        model_path=path, n_ctx=n_ctx, n_threads=2, logits_all=logits_all, verbose=False, seed=0
    )


def generate(path: str, prompt: str, count: str) -> dict:
    llm = _load(path)
    ids = [int(t) for t in prompt.split(",")]
    out: list[int] = []
    for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(int(token))
        if len(out) >= int(count):
            break
    text = llm.detokenize(out).decode("utf-8", errors="replace")
    return {"ids": out, "text": text, "n_vocab": llm.n_vocab()}


def logits(path: str, prompt: str, target: str) -> dict:
    llm = _load(path, logits_all=True)
    ids = [int(t) for t in prompt.split(",")]
    llm.eval(ids)
    np.save(target, np.asarray(llm.scores[: len(ids)], dtype=np.float32))
    return {"positions": len(ids)}


def perplexity(path: str, ids_path: str, window: str) -> dict:
    width = int(window)
    ids = np.load(ids_path).astype(np.int64).reshape(-1)
    llm = _load(path, n_ctx=width, logits_all=True)
    nll, count = 0.0, 0
    started = time.perf_counter()
    for start in range(0, len(ids) - width + 1, width):
        chunk = [int(t) for t in ids[start : start + width]]
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[: width - 1], dtype=np.float64)
        logits -= logits.max(axis=-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        nll -= float(logp[np.arange(width - 1), chunk[1:]].sum())
        count += width - 1
    return {"ppl": math.exp(nll / count), "tokens": count, "seconds": time.perf_counter() - started}


def model_quantize(source: str, target: str, ftype: str) -> dict:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.nthread = 2
    started = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params))
    return {"rc": int(rc), "seconds": time.perf_counter() - started}


def tokenize(path: str, text: str) -> dict:
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    return {"ids": llm.tokenize(text.encode(), add_bos=False, special=False)}


COMMANDS = {
    "quantize": lambda a: quantize(int(a[0]), a[1], a[2], a[3] if len(a) > 3 else None),
    "generate": lambda a: generate(*a),
    "perplexity": lambda a: perplexity(*a),
    "logits": lambda a: logits(*a),
    "model_quantize": lambda a: model_quantize(*a),
    "tokenize": lambda a: tokenize(*a),
}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](sys.argv[2:])))
