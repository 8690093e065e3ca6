"""AutoScheme worker (see bench/auto_scheme_cpu.py): one ``AutoRound(model, tok,
scheme=AutoScheme(...)).quantize_and_save(...)`` call, timed, in ours (``job["tool"] == "ours"``,
the workspace venv) or Intel auto-round 0.16.1 (its venv). The two APIs take the same arguments.
Standard library + torch + transformers besides the tool itself (bench/_worker_common.py)."""

from __future__ import annotations

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker_common import find_checkpoint, load_fp32, peak_rss_mb, run_worker, timed, versions


def body(job: dict) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if job["tool"] == "ours":
        from autoround import AutoRound, AutoScheme

        package = "autoround-core"
    else:
        from auto_round import AutoRound
        from auto_round.auto_scheme import AutoScheme

        package = "auto-round"
    model, tok = load_fp32(job["model_dir"])
    rss_loaded = peak_rss_mb()
    auto = AutoScheme(
        avg_bits=job["avg_bits"],
        options=job["options"],
        nsamples=job["search_nsamples"],
        seqlen=job["search_seqlen"],
    )
    kw = dict(
        scheme=auto,
        iters=job["iters"],
        nsamples=job["nsamples"],
        seqlen=job["seqlen"],
        batch_size=job["batch_size"],
        dataset=job["dataset"],
        device_map="cpu",
        disable_opt_rtn=True,
    )
    if job["tool"] != "ours":
        kw["amp"] = False  # fp32 on this CPU, as ours computes (bf16 autocast is ~9x slower here)
    ar = AutoRound(model, tok, **kw)
    out = job["out_dir"]
    _, seconds, rss = timed(lambda: ar.quantize_and_save(out, format="auto_round"))
    return {
        "status": "ok",
        "time_s": seconds,
        "peak_rss_mb": rss,
        "rss_after_load_mb": rss_loaded,
        "checkpoint": find_checkpoint(out),
        "call": {k: (v if k != "scheme" else repr(v)) for k, v in kw.items()},
        "versions": versions("torch", "transformers", package),
    }


if __name__ == "__main__":
    run_worker(body)
