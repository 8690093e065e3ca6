"""AutoScheme on SmolLM2-135M (issue 21): ours vs Intel auto-round 0.16.1, side by side in one run.

    .venv/bin/python bench/auto_scheme_cpu.py                      # the issue's two budgets
    .venv/bin/python bench/auto_scheme_cpu.py --quick --tools ours # smoke test (minutes)

The issue's configurations (``--configs``, default ``3:W2A16G64,W4A16;5.5:W4A16,W8A16``): each
``avg_bits:options`` pair is one target over its own options. Each tool runs
``AutoRound(model, tok, scheme=AutoScheme(avg_bits, options, nsamples=16, seqlen=256),
iters=..., nsamples=16, seqlen=256, batch_size=4, dataset=<jsonl>).quantize_and_save(dir)`` in a
fresh worker process in its own venv (bench/_auto_scheme_worker.py; Intel with ``amp=False``:
fp32 on this CPU, as ours; its on-disk AutoScheme score cache pointed at an empty directory per job, so
no search reuses another's scores), first with RTN (``iters=0, disable_opt_rtn=True``) for every
configuration, then with SignRound (``--iters``, default 20). Both tools read the same
calibration file: 64 chunks of wikitext-2 valid.txt as .jsonl (Intel's AutoScheme takes only a
dataset string, so the pre-tokenized ids of bench/cpu_small.py cannot be shared; each tool samples
its own windows).

Reported per row: the plan's bits per weight (every decoder-block Linear of the saved checkpoint,
counted by autoround.auto_scheme.layer_bits, Intel's count, for both tools' checkpoints), layers
per scheme, the search's wall time (ours ``auto_scheme.search``, Intel's ``_gen_auto_scheme``: each
from the loaded model to the per-layer plan, calibration included), the whole call's wall time and
peak RSS (VmHWM), and perplexity (cpu-small protocol: first 20 x 2048-token windows of
wiki.test.raw, fp32, computed here on load_dense of each checkpoint).
Writes bench/out/auto_scheme_cpu.json (after every job; ``--tag`` names another) and prints a
markdown table.

Then our checkpoints are served by vLLM through our plugin (the vllm venv of
tests/vllm/setup_venv.sh; ``--no-vllm`` skips it, ``--vllm-from REPORT.json`` runs only this step
on an earlier report's checkpoints): fp32, perplexity from vLLM's prompt logprobs over the first
``--vllm-windows`` (default 4) evaluation windows against transformers' on the same windows and
checkpoint (load_dense), and greedy agreement with transformers on 8 wikitext prompts x 32 tokens.
Writes ``<report>-vllm.json`` and prints its table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import cpu_small  # noqa: E402  (the cpu-small setup, venvs and evaluator)

CONFIGS = "3:W2A16G64,W4A16;5.5:W4A16,W8A16"
TOOLS = ("ours", "intel")
NSAMPLES, SEQLEN, BATCH = 16, 256, 4
CHUNK_CHARS, CHUNKS = 6000, 64


def calibration_file(path: Path) -> Path:
    """64 consecutive 6000-character chunks of wikitext-2 valid.txt, one {"text": ...} a line."""
    text = cpu_small.CALIB_TEXT.read_text(encoding="utf-8")
    lines = [json.dumps({"text": text[i * CHUNK_CHARS : (i + 1) * CHUNK_CHARS]}) for i in range(CHUNKS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(tool: str, job: dict, work: Path, logs: Path) -> dict:
    """One worker process in ``tool``'s venv; its result (or the error and log tail)."""
    name = job["name"]
    job = dict(job, tool=tool, threads=cpu_small.THREADS, result_path=str(work / f"{name}.result.json"))
    Path(job["result_path"]).unlink(missing_ok=True)
    (work / f"{name}.job.json").write_text(json.dumps(job, indent=2))
    env = cpu_small.worker_env(tool)
    if tool == "intel":
        # Intel's AutoScheme keeps each option's scores in ~/.cache/auto_round and reuses them when
        # model, option and data match (a second budget over a shared option then skips its
        # scoring): a fresh, empty cache per job times a whole search.
        cache = work / f"{name}.intel-scheme-cache"
        shutil.rmtree(cache, ignore_errors=True)
        env["AR_AUTO_SCHEME_CACHE"] = str(cache)
    start = time.perf_counter()
    with open(logs / f"{name}.log", "w") as log:
        command = [
            cpu_small.python_of(tool),
            str(BENCH / "_auto_scheme_worker.py"),
            str(work / f"{name}.job.json"),
        ]
        rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(work)).returncode
    return cpu_small.worker_result(job, logs / f"{name}.log", rc, start)


VLLM_VENV = Path(os.environ.get("AUTOROUND_VLLM_VENV", Path.home() / ".cache/autoround-dev/vllm-venv"))
ROOT = BENCH.parent
VLLM_TOKENS, VLLM_PROMPTS = 32, 8


def served_by_vllm(report: dict, ev: cpu_small.Evaluator, windows: int, work: Path, logs: Path) -> dict:
    """Our checkpoints of ``report`` in vLLM (one worker process) against transformers."""
    from transformers import AutoTokenizer

    ours = {k: r for k, r in report["results"].items() if k.endswith("/ours") and r.get("status") == "ok"}
    ids = ev.ids[0]
    seq = cpu_small.EVAL_SEQLEN
    window_ids = [ids[i * seq : (i + 1) * seq].tolist() for i in range(windows)]
    tok = AutoTokenizer.from_pretrained(ev.model_dir)
    text = cpu_small.CALIB_TEXT.read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if len(ln.split()) > 24 and "=" not in ln]
    prompts = [tok(" ".join(ln.split()[:24])).input_ids for ln in lines[:VLLM_PROMPTS]]
    job = {
        "name": "vllm",
        "tool": "vllm",
        "checkpoints": [r["checkpoint"] for r in ours.values()],
        "windows": window_ids,
        "prompts": prompts,
        "max_tokens": VLLM_TOKENS,
        "max_model_len": seq + 64,  # the windows score one token past the prompt
        "threads": cpu_small.THREADS,
        "result_path": str(work / "vllm.result.json"),
    }
    (work / "vllm.job.json").write_text(json.dumps(job))
    sources = [ROOT / "packages" / f"autoround-{p}" / "src" for p in ("core", "hf", "vllm")]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(map(str, sources)),
        VLLM_CPU_KVCACHE_SPACE="2",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="2",
    )
    env.pop("VIRTUAL_ENV", None)
    with open(logs / "vllm.log", "w") as log:
        command = [
            str(VLLM_VENV / "bin/python"),
            str(BENCH / "_auto_scheme_worker.py"),
            str(work / "vllm.job.json"),
        ]
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(work))
    try:
        served = json.loads((work / "vllm.result.json").read_text())
    except (OSError, ValueError):
        return {"status": "error", "message": (logs / "vllm.log").read_text()[-1500:]}
    if served.get("status") != "ok":
        return served
    rows = {}
    for key, res in ours.items():
        got = served["served"][res["checkpoint"]]
        model = ev.load({**res, "checkpoint_kind": "auto_round"})
        hf_ppl = cpu_small.Evaluator.ppl(_windows_only(ev, windows), model)[0]
        agree, whole = [], 0
        with torch.no_grad():
            for prompt, vllm_tokens in zip(prompts, got["greedy"], strict=True):
                out = model.generate(
                    torch.tensor([prompt]), max_new_tokens=VLLM_TOKENS, do_sample=False, pad_token_id=0
                )[0, len(prompt) :].tolist()
                same = next(
                    (i for i, (a, b) in enumerate(zip(out, vllm_tokens, strict=False)) if a != b), VLLM_TOKENS
                )
                agree.append(same / VLLM_TOKENS)
                whole += same == VLLM_TOKENS
        rows[key] = {
            "quantization": got["quantization"],
            "vllm_ppl": math.exp(got["nll_sum"] / got["tokens"]),
            "transformers_ppl": hf_ppl,
            "greedy_prefix": sum(agree) / len(agree),
            "greedy_identical": whole,
            "engine_start_s": got["start_s"],
        }
    return {
        "status": "ok",
        "windows": windows,
        "prompts": len(prompts),
        "rows": rows,
        "versions": served["versions"],
    }


def _windows_only(ev: cpu_small.Evaluator, windows: int) -> cpu_small.Evaluator:
    """``ev`` limited to its first ``windows`` windows."""
    limited = cpu_small.Evaluator.__new__(cpu_small.Evaluator)
    limited.model_dir, limited.windows, limited.ids = ev.model_dir, windows, ev.ids
    return limited


def render_vllm(vllm: dict) -> str:
    if vllm.get("status") != "ok":
        return f"vLLM step failed: {vllm.get('message', '')[:1500]}"
    rows = [
        f"| checkpoint (ours) | vLLM method | ppl vLLM ({vllm['windows']} windows) | ppl transformers | "
        f"greedy prefix agreement ({vllm['prompts']} x {VLLM_TOKENS}) | identical |",
        "|---|---|---|---|---|---|",
    ]
    for key, r in vllm["rows"].items():
        rows.append(
            f"| {key.removesuffix('/ours')} | {r['quantization']} | {r['vllm_ppl']:.3f} | "
            f"{r['transformers_ppl']:.3f} | {r['greedy_prefix']:.3f} | {r['greedy_identical']}/{vllm['prompts']} |"
        )
    return "\n".join(rows)


def plan_of(checkpoint: str, model: torch.nn.Module) -> dict:
    """Bits per weight (Intel's count) and layers per scheme over the decoder blocks' Linears."""
    from autoround.auto_scheme import layer_bits
    from autoround.formats import checkpoint_spec

    spec = checkpoint_spec(checkpoint)
    bits = weights = 0
    counts: Counter[str] = Counter()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers."):
            scheme = spec.scheme_for(name)
            bits += layer_bits(scheme, module.out_features, module.in_features)
            weights += module.weight.numel()
            counts["16-bit" if scheme is None else f"W{scheme.bits}G{scheme.group_size}"] += 1
    return {"avg_bits": bits / weights, "layers": dict(counts)}


def render(report: dict) -> str:
    head = (
        "| target | algorithm | tool | plan bits | layers per scheme | search (s) | call (s) "
        "| peak RSS (MB) | ppl |"
    )
    rows = [head, "|---|---|---|---|---|---|---|---|---|"]
    for key, res in report["results"].items():
        target, algorithm, tool = key.split("/")
        if res.get("status") != "ok":
            rows.append(f"| {target} | {algorithm} | {tool} | {res.get('message', '')[:80]} | | | | | |")
            continue
        layers = ", ".join(f"{k} x {v}" for k, v in sorted(res["plan"]["layers"].items()))
        search = f"{res['search_s']:.1f}" if res.get("search_s") is not None else "?"
        rows.append(
            f"| {target} | {algorithm} | {tool} | {res['plan']['avg_bits']:.3f} | {layers} | "
            f"{search} | {res['time_s']:.1f} | {res['peak_rss_mb']:.0f} | {res['ppl']:.3f} |"
        )
    fp32 = report.get("fp32_ppl")
    return "\n".join(rows) + (f"\n\nfp32 model: ppl {fp32:.3f}" if fp32 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=CONFIGS, help="avg_bits:options pairs separated by ';'")
    ap.add_argument("--tag", default="", help="writes auto_scheme_cpu-<tag>.json")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--iters", type=int, default=None, help="SignRound iterations (default 20; --quick 2)")
    ap.add_argument("--no-signround", action="store_true", help="RTN rows only")
    ap.add_argument("--quick", action="store_true", help="2 iters, 2 eval windows, 4 search samples")
    ap.add_argument("--eval-windows", type=int, default=None, help="default 20 (--quick 2)")
    ap.add_argument("--search-nsamples", type=int, default=None, help="default 16 (--quick 4)")
    ap.add_argument("--skip-setup", action="store_true", help="use Intel's venv as it is")
    ap.add_argument("--out", default=str(BENCH / "out"))
    ap.add_argument("--no-vllm", action="store_true", help="skip serving our checkpoints in vLLM")
    ap.add_argument("--vllm-from", default=None, help="only serve this report's checkpoints in vLLM")
    ap.add_argument("--vllm-windows", type=int, default=4)
    args = ap.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    configs = [(float(c.split(":")[0]), c.split(":")[1]) for c in args.configs.split(";") if c]
    iters = args.iters if args.iters is not None else (2 if args.quick else 20)
    windows = args.eval_windows or (2 if args.quick else cpu_small.EVAL_WINDOWS)
    out = Path(args.out)
    work, logs = out / "auto_scheme_work", out / "logs"
    for d in (work, logs):
        d.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cpu_small.THREADS)
    from autoround.model_sources import materialize_smollm2

    if args.vllm_from:
        earlier = Path(args.vllm_from)
        ev = cpu_small.Evaluator(materialize_smollm2(), args.vllm_windows)
        vllm = served_by_vllm(json.loads(earlier.read_text()), ev, args.vllm_windows, work, logs)
        earlier.with_name(earlier.stem + "-vllm.json").write_text(json.dumps(vllm, indent=2, default=str))
        print(render_vllm(vllm))
        return
    cpu_small.setup(args.skip_setup, set(tools))
    model_dir = materialize_smollm2()
    dataset = calibration_file(work / "calibration.jsonl")
    report: dict = {
        "command": " ".join([".venv/bin/python", "bench/auto_scheme_cpu.py", *sys.argv[1:]]),
        "machine": cpu_small.machine_info(),
        "versions": {t: cpu_small.venv_versions(t) for t in tools},
        "configs": args.configs,
        "iters": iters,
        "eval_windows": windows,
        "results": {},
    }
    ev = cpu_small.Evaluator(model_dir, windows)
    fp32 = ev.fp32_model()
    report["fp32_ppl"] = ev.ppl(fp32)[0]
    algorithms = {"rtn": 0} if args.no_signround else {"rtn": 0, f"signround{iters}": iters}
    search = args.search_nsamples or (4 if args.quick else NSAMPLES)
    json_path = out / (f"auto_scheme_cpu-{args.tag}.json" if args.tag else "auto_scheme_cpu.json")
    for algorithm, algorithm_iters in algorithms.items():
        for target, options in configs:
            for tool in tools:
                key = f"{target:g} over {options}/{algorithm}/{tool}"
                name = f"{target:g}_{options.replace(',', '-')}_{algorithm}_{tool}"
                job = {
                    "name": name,
                    "model_dir": str(model_dir),
                    "avg_bits": target,
                    "options": options,
                    "iters": algorithm_iters,
                    "nsamples": NSAMPLES,
                    "seqlen": SEQLEN,
                    "batch_size": BATCH,
                    "search_nsamples": search,
                    "search_seqlen": SEQLEN,
                    "dataset": str(dataset),
                    "out_dir": str(work / name),
                }
                shutil.rmtree(job["out_dir"], ignore_errors=True)  # a rerun replaces the checkpoint
                load_before = os.getloadavg()
                result = run(tool, job, work, logs)
                result["loadavg_before"], result["loadavg_after"] = load_before, os.getloadavg()
                if result.get("status") == "ok":
                    result["plan"] = plan_of(result["checkpoint"], fp32)
                    result["ppl"] = ev.ppl(ev.load({**result, "checkpoint_kind": "auto_round"}))[0]
                report["results"][key] = result
                json_path.write_text(json.dumps(report, indent=2, default=str))
                print(render({"results": {key: result}}).splitlines()[-1], flush=True)
    print(render(report))
    if not args.no_vllm:
        vllm = served_by_vllm(report, ev, args.vllm_windows, work, logs)
        json_path.with_name(json_path.stem + "-vllm.json").write_text(json.dumps(vllm, indent=2, default=str))
        print(render_vllm(vllm))


if __name__ == "__main__":
    main()
