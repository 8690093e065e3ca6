"""GGUF benchmark worker (bench/gguf_cpu.py): one quantize-and-export call, in OUR venv
(``tool: ours``, our ``autoround``) or in Intel's (``tool: intel``, ``auto_round`` 0.16.1).

Both get the same calibration ids (a list of token-id tensors) and the same call:
``AutoRound(model, tok, scheme=..., iters=..., dataset=...).quantize_and_save(out, format=...)``,
timed as a whole (quantization and GGUF export). The .gguf written is found under ``out``.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker_common import load_fp32, run_worker, timed, versions


def body(job: dict) -> dict:
    import torch

    if job["tool"] == "ours":
        from autoround import AutoRound
    else:
        from auto_round import AutoRound

    model, tok = load_fp32(job["model_dir"])
    ids = torch.load(job["ids_path"])
    dataset = [row.unsqueeze(0) for row in ids] if job["tool"] == "intel" else list(ids)
    kw = dict(
        scheme=job["scheme"],
        iters=job["iters"],
        nsamples=ids.shape[0],
        seqlen=ids.shape[1],
        batch_size=job["batch_size"],
        dataset=dataset,
        disable_opt_rtn=not job["opt_rtn"],
    )
    if job["tool"] == "intel":
        kw["device_map"] = "cpu"
    ar = AutoRound(model, tok, **kw)
    _, seconds, rss = timed(lambda: ar.quantize_and_save(job["out_dir"], format=job["format"]))
    files = [os.path.join(d, f) for d, _, fs in os.walk(job["out_dir"]) for f in fs if f.endswith(".gguf")]
    if len(files) != 1:
        return {"status": "error", "message": f"expected one .gguf under {job['out_dir']}, found {files}"}
    return {
        "status": "ok",
        "time_s": seconds,
        "peak_rss_mb": rss,
        "gguf": files[0],
        "versions": versions("torch", "transformers", "gguf", "autoround-core", "auto-round"),
    }


if __name__ == "__main__":
    run_worker(body)
