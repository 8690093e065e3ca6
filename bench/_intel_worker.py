"""cpu-small worker for Intel auto-round 0.16.1 (runs ONLY in Intel's venv; see bench/cpu_small.py).

Intel receives the calibration ids pre-tokenized: ``dataset=`` a list of (1, seqlen) int64 tensors
(``calibration/llm.py:calib``: a non-str dataset is iterated as the dataloader; each tensor is fed
to the model as ``input_ids``). The model object is passed (regular flow, not model-free).
Timed: ``ar.quantize()``; then ``ar.save_quantized(dir, format="auto_round")`` (not timed).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker_common import (
    find_checkpoint,
    load_fp32,
    peak_rss_mb,
    run_worker,
    save_qdq_linears,
    save_tuned_ranges,
    timed,
    versions,
)


def body(job: dict) -> dict:
    import torch
    from auto_round import AutoRound

    model, tok = load_fp32(job["model_dir"])
    ids = torch.load(job["ids_path"])
    dataset = [row.unsqueeze(0) for row in ids]
    rss_loaded = peak_rss_mb()
    kw = dict(
        scheme=job["scheme"],
        iters=job["iters"],
        nsamples=ids.shape[0],
        seqlen=ids.shape[1],
        batch_size=job["batch_size"],
        dataset=dataset,
        device_map="cpu",
    )
    if job.get("group_size"):
        kw["group_size"] = job["group_size"]
    if job["iters"] == 0 and not job["opt_rtn"]:
        kw["disable_opt_rtn"] = True
    if job.get("amp") is False:
        kw["amp"] = False
    kw.update(job.get("extra_kwargs") or {})
    ar = AutoRound(model, tok, **kw)
    ctx = getattr(ar, "model_context", None)
    amp = {"amp": getattr(ctx, "amp", None), "amp_dtype": str(getattr(ctx, "amp_dtype", None))}
    _, seconds, rss = timed(ar.quantize)
    out = job["out_dir"]
    if job.get("save") == "qdq":  # weight-only float schemes: Intel keeps the qdq weights in place
        checkpoint, kind = save_qdq_linears(ar.model, out), "qdq_state_dict"
        tuned = {  # its unwrapper leaves act_max * act_max_scale on the wrapped Linear
            name.removesuffix(".orig_layer"): module.act_max
            for name, module in ar.model.named_modules()
            if isinstance(module, torch.nn.Linear) and getattr(module, "act_max", None) is not None
        }
        ranges = save_tuned_ranges(tuned, out)
    else:
        ar.save_quantized(out, format="auto_round")
        checkpoint, kind, ranges = find_checkpoint(out), "auto_round", None
    return {
        "status": "ok",
        "time_s": seconds,
        "peak_rss_mb": rss,
        "rss_after_load_mb": rss_loaded,
        "checkpoint": checkpoint,
        "checkpoint_kind": kind,
        "ranges": ranges,
        "compressor": type(ar).__name__,
        "model_dtype_after": str(next(model.parameters()).dtype),
        **amp,
        "call": {
            k: (v if k != "dataset" else f"list of {len(v)} tensors {tuple(v[0].shape)}")
            for k, v in kw.items()
        },
        "versions": versions("torch", "transformers", "auto-round"),
    }


if __name__ == "__main__":
    run_worker(body)
