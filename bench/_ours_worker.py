"""cpu-small worker for OUR autoround (runs in the workspace venv). See bench/cpu_small.py.

Jobs: ``{"kind": "quantize", ...}`` -> AutoRound(...).quantize() timed, checkpoint saved in the
auto_round format; ``{"kind": "floor", ...}`` -> the eager floor and our per-iteration SignRound
time on one block (the method of bench/profile_block.py).
"""

from __future__ import annotations

import os
import sys
import time

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


def quantize_job(job: dict) -> dict:
    import torch

    from autoround import AutoRound, save

    model, tok = load_fp32(job["model_dir"])
    ids = torch.load(job["ids_path"])  # (nsamples, seqlen) int64
    dataset = [row for row in ids]  # a list of token-id tensors
    rss_loaded = peak_rss_mb()
    kw = dict(
        scheme=job["scheme"],
        iters=job["iters"],
        nsamples=ids.shape[0],
        seqlen=ids.shape[1],
        batch_size=job["batch_size"],
        dataset=dataset,
        disable_opt_rtn=not job["opt_rtn"],
    )
    if job.get("group_size"):
        kw["group_size"] = job["group_size"]
    kw.update(job.get("extra_kwargs") or {})
    try:
        ar = AutoRound(model, tok, **kw)
        used = ar.calibration()  # cheap; check that our loader kept exactly the given rows
        same_rows = sorted(map(tuple, used.tolist())) == sorted(map(tuple, ids.tolist()))
        qm, seconds, rss = timed(ar.quantize)
    except NotImplementedError as exc:
        return {"status": "not built", "message": str(exc)[:500]}
    out = job["out_dir"]
    if job.get("save") == "qdq":  # schemes no format of both tools stores: the fake-quantized weights
        checkpoint, kind = save_qdq_linears(qm.model, out), "qdq_state_dict"
        tuned = {name: lq.input_absmax for name, lq in qm.layers.items() if lq.input_absmax is not None}
        ranges = save_tuned_ranges(tuned, out)
    else:
        save(qm, out, format="auto_round", overwrite=True)
        checkpoint, kind, ranges = find_checkpoint(out), "auto_round", None
    return {
        "status": "ok",
        "time_s": seconds,
        "peak_rss_mb": rss,
        "rss_after_load_mb": rss_loaded,
        "checkpoint": checkpoint,
        "checkpoint_kind": kind,
        "ranges": ranges,
        "same_calibration_rows": same_rows,
        "call": {
            k: (v if k != "dataset" else f"list of {len(v)} tensors {tuple(v[0].shape)}")
            for k, v in kw.items()
        },
        "versions": versions("torch", "transformers", "autoround-core"),
    }


def floor_job(job: dict) -> dict:
    import copy

    import torch
    from profile_block import eager_time

    from autoround.algorithms import SignRoundSettings, tune_block
    from autoround.modeling import capture_block_inputs
    from autoround.schemes import PRESETS

    model, _ = load_fp32(job["model_dir"])
    ids = torch.load(job["ids_path"])[: job["batch_size"]]
    captured = capture_block_inputs(model, model.model.layers[0], ids, torch.device("cpu"), False)
    block = copy.deepcopy(model.model.layers[job.get("block", 3)])
    with torch.no_grad():
        target = block(captured.hidden, **captured.kwargs)
    target = target[0] if isinstance(target, tuple) else target

    def timed_step(amp: bool) -> float:
        return eager_time(block, captured.hidden, captured.kwargs, target, amp, job.get("reps", 5))

    for p in block.parameters():
        p.requires_grad_(True)
    eager = timed_step(False)
    # what our default (amp) tunes under where bf16 is native: the same step, bf16 matmuls
    eager_bf16 = timed_step(True) if SignRoundSettings().autocast_dtype("cpu") is not None else None
    for p in block.parameters():
        p.requires_grad_(False)
        p.grad = None
    layers = {n: PRESETS["W4A16"] for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    iters = job["iters"]

    def tune(n: int) -> float:
        start = time.perf_counter()
        tune_block(
            block,
            captured.hidden,
            target,
            captured.kwargs,
            layers,
            SignRoundSettings(iters=n, batch_size=job["batch_size"]),
        )
        return time.perf_counter() - start

    tune(2)  # warm-up
    short, full = tune(2), tune(iters)
    # the per-block setup (wrapping, the scale search of enable_alg_ext) is paid once per block;
    # the marginal iteration is what 20 or 200 iterations multiply
    marginal = (full - short) / (iters - 2) if iters > 2 else full / iters
    return {
        "status": "ok",
        "eager_step_s": eager,
        "eager_bf16_step_s": eager_bf16,
        "signround_iter_s": full / iters,
        "ratio": full / iters / eager,
        "signround_marginal_iter_s": marginal,
        "marginal_ratio": marginal / eager,
        "block_setup_s": short - 2 * marginal,
        "tokens": list(ids.shape),
        "block": job.get("block", 3),
        "iters": iters,
    }


def main_body(job: dict) -> dict:
    return floor_job(job) if job["kind"] == "floor" else quantize_job(job)


if __name__ == "__main__":
    run_worker(main_body)
