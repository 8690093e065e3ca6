"""Shared by the cpu-small workers. Standard library + torch + transformers only: each worker runs
in its own venv (ours, Intel's, llm-compressor's) and must not import ``autoround``.

A worker is run as ``python <worker>.py JOB.json``; it reads the job, does one quantize call and
writes ``job["result_path"]`` (JSON). It also prints that JSON on its last stdout line.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB: VmHWM of /proc/self/status (falls back to ru_maxrss).

    ``ru_maxrss`` alone is wrong for a worker started from a big parent: Linux folds the parent's
    RSS at fork time into the child's maxrss across execve (seen here: every worker reported the
    orchestrator's 1964 MB). VmHWM belongs to the mm that execve created, so it is this worker's own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return ru_maxrss_mb()


def ru_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def run_worker(body: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    with open(sys.argv[1]) as f:
        job = json.load(f)
    import torch

    torch.set_num_threads(int(job.get("threads", 2)))
    result: dict[str, Any] = {"status": "error"}
    try:
        result = body(job)
    except Exception as exc:  # recorded, not raised: the orchestrator carries on with other rows
        result = {
            "status": "error",
            "message": f"{type(exc).__name__}: {exc}"[:2000],
            "traceback": traceback.format_exc()[-4000:],
        }
    result.setdefault("peak_rss_mb_end", peak_rss_mb())
    result["ru_maxrss_mb_end"] = ru_maxrss_mb()
    result["threads"] = torch.get_num_threads()
    result["pid"] = os.getpid()
    with open(job["result_path"], "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(json.dumps(result, default=str))


def load_fp32(model_dir: str):
    """The model in fp32 for a quantize job. ``AUTOROUND_BENCH_ATTN`` (e.g. ``eager``) picks the
    attention implementation, to compare tools that force one while calibrating (llm-compressor
    forces eager) under the same settings; unset, transformers' default (SDPA)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    attn = os.environ.get("AUTOROUND_BENCH_ATTN")
    extra = {"attn_implementation": attn} if attn else {}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **extra)
    model.eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(fn(), wall seconds, peak RSS MB right after the call)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start, peak_rss_mb()


def versions(*names: str) -> dict[str, str]:
    import importlib.metadata as md

    got = {}
    for name in names:
        try:
            got[name] = md.version(name)
        except md.PackageNotFoundError:
            got[name] = "absent"
    return got


def find_checkpoint(root: str) -> str:
    """The folder under ``root`` that holds config.json (Intel may add a subfolder)."""
    hits = [d for d, _, files in os.walk(root) if "config.json" in files]
    if not hits:
        raise FileNotFoundError(f"no config.json under {root}")
    return sorted(hits, key=len)[0]


def save_qdq_linears(model, out_dir: str) -> str:
    """Every ``nn.Linear`` weight but the LM head, as fp32, into ``out_dir/qdq.safetensors``.

    After a quantize call the tools hold the quantize-dequantized weights in place (ours, and
    Intel's for weight-only schemes), so this is the fake-quantized model every tool's
    perplexity is computed on, whatever formats the tool can or cannot save the scheme in.
    """
    import torch
    from safetensors.torch import save_file

    # Intel leaves a wrapper around some layers (WrapperWALayer, its Linear as ``orig_layer``)
    state = {
        f"{name.removesuffix('.orig_layer')}.weight": module.weight.detach().to(torch.float32).contiguous()
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")
    }
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "qdq.safetensors")
    save_file(state, path)
    return path


def save_tuned_ranges(ranges: dict, out_dir: str) -> str | None:
    """Each layer's calibrated activation range as the tool left it after tuning (name -> 0-dim
    float32) into ``out_dir/ranges.safetensors``; None when the tool kept none (weight-only or
    dynamic schemes). For static schemes this is the range the tool's checkpoint serves with:
    the calibrated maximum times the tuned factor (Intel's ``act_max * act_max_scale``)."""
    import torch
    from safetensors.torch import save_file

    if not ranges:
        return None
    state = {name: r.detach().to(torch.float32).reshape(()).contiguous() for name, r in ranges.items()}
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "ranges.safetensors")
    save_file(state, path)
    return path
