"""AutoScheme worker (see bench/auto_scheme_cpu.py): one ``AutoRound(model, tok,
scheme=AutoScheme(...)).quantize_and_save(...)`` call, timed, in ours (``job["tool"] == "ours"``,
the workspace venv) or Intel auto-round 0.16.1 (its venv). The two APIs take the same arguments.
Standard library + torch + transformers besides the tool itself (bench/_worker_common.py).

The search phase is timed apart from the whole call by wrapping the function each tool runs it in:
ours ``autoround.auto_scheme.search`` (measure, choose; the search's calibration ids are built
just before it, in well under a second; until 2026-12-06 22:30 the worker wrapped
``runner.choose_schemes``, which includes them: the figures in docs/benchmarks.md), Intel's
``BaseOrchestrator._gen_auto_scheme`` (its calibration, delta-loss scoring, choice). Both start
from the loaded model and end with the per-layer plan, before RTN or SignRound begin."""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker_common import find_checkpoint, load_fp32, peak_rss_mb, run_worker, timed, versions


def time_calls(owner: Any, name: str, seconds: list[float]) -> None:
    """Replace ``owner.name`` by a wrapper that appends each call's wall time to ``seconds``."""
    inner: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


def serve_in_vllm(job: dict) -> dict:
    """vLLM's view of each checkpoint: NLL over the evaluation windows, greedy continuations."""
    import gc

    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    served = {}
    for path in job["checkpoints"]:
        start = time.perf_counter()
        llm = LLM(model=path, dtype="float32", enforce_eager=True, max_model_len=job["max_model_len"], seed=0)
        started = time.perf_counter() - start
        scoring = SamplingParams(max_tokens=1, prompt_logprobs=0)
        nll, tokens = 0.0, 0
        for window in job["windows"]:
            out = llm.generate([TokensPrompt(prompt_token_ids=window)], scoring, use_tqdm=False)[0]
            steps = zip(out.prompt_logprobs[1:], window[1:], strict=True)
            nll -= sum(step[token].logprob for step, token in steps)
            tokens += len(window) - 1
        greedy = SamplingParams(temperature=0.0, max_tokens=job["max_tokens"], ignore_eos=True)
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in job["prompts"]]
        outputs = llm.generate(prompts, greedy, use_tqdm=False)
        served[path] = {
            "quantization": llm.llm_engine.vllm_config.model_config.quantization,
            "start_s": started,
            "nll_sum": nll,
            "tokens": tokens,
            "greedy": [list(o.outputs[0].token_ids) for o in outputs],
            "seconds": time.perf_counter() - start,
        }
        del llm
        gc.collect()
    return {"status": "ok", "served": served, "versions": versions("torch", "transformers", "vllm")}


def body(job: dict) -> dict:
    if job["tool"] == "vllm":
        return serve_in_vllm(job)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    search_s: list[float] = []
    if job["tool"] == "ours":
        from autoround import AutoRound, AutoScheme, auto_scheme

        time_calls(auto_scheme, "search", search_s)
        package = "autoround-core"
    else:
        from auto_round import AutoRound
        from auto_round.auto_scheme import AutoScheme
        from auto_round.compressors.base import BaseOrchestrator

        time_calls(BaseOrchestrator, "_gen_auto_scheme", search_s)
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
        "search_s": sum(search_s) if search_s else None,
        "search_calls": len(search_s),
        "peak_rss_mb": rss,
        "rss_after_load_mb": rss_loaded,
        "checkpoint": find_checkpoint(out),
        "call": {k: (v if k != "scheme" else repr(v)) for k, v in kw.items()},
        "versions": versions("torch", "transformers", package),
    }


if __name__ == "__main__":
    run_worker(body)
