"""SmolLM2 W4A16 g64 through llm-compressor: our SignRoundModifier vs our own AutoRound API (same
settings) vs llm-compressor's GPTQModifier, side by side in one run (cpu-small protocol).

    .venv/bin/python bench/llmc_compare.py                 # ~10-15 min on the 2-core CPU
    .venv/bin/python bench/llmc_compare.py --iters 2 --eval-windows 2   # smoke test

Every job runs in a fresh worker process and gets the SAME calibration ids as bench/cpu_small.py
(16 x 256 tokens of wikitext-2 valid.txt at random.Random(0) offsets), SmolLM2-135M in fp32, 2
threads: ``ours`` = bench/_ours_worker.py (``AutoRound(scheme="W4A16", group_size=64, iters,
batch_size=4)``), ``llmc_signround`` = bench/_llmc_signround_worker.py (``oneshot`` +
``SignRoundModifier``, same knobs, this venv), ``llmc_gptq`` = bench/_llmc_worker.py
(``GPTQModifier``, llm-compressor's own venv). Perplexity: the first 20 x 2048-token windows of
wiki.test.raw, fp32, by autoround.eval.perplexity, for all three. Writes bench/out/llmc_compare.md
and .json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import cpu_small as cs  # noqa: E402  (the protocol's constants, workers and evaluator)

GROUP, BITS = 64, 4
TOOLS = {
    "ours": "our AutoRound API",
    "llmc_signround": "llm-compressor oneshot + our SignRoundModifier",
    "llmc_gptq": "llm-compressor oneshot + its GPTQModifier",
}


def run_signround_worker(job: dict, work: Path, logs: Path) -> dict:
    """bench/_llmc_signround_worker.py in this venv, as cpu_small.run_job runs the others."""
    job = dict(job, threads=cs.THREADS, result_path=str(work / f"{job['name']}.result.json"))
    Path(job["result_path"]).unlink(missing_ok=True)
    job_path = work / f"{job['name']}.job.json"
    job_path.write_text(json.dumps(job, indent=2))
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=str(cs.THREADS),
        MKL_NUM_THREADS=str(cs.THREADS),
    )
    start = time.perf_counter()
    with open(logs / f"{job['name']}.log", "w") as log:
        worker = str(BENCH / "_llmc_signround_worker.py")
        rc = subprocess.run(
            [sys.executable, worker, str(job_path)], stdout=log, stderr=subprocess.STDOUT, env=env
        ).returncode
    try:
        res = json.loads(Path(job["result_path"]).read_text())
    except (OSError, ValueError):
        tail = (logs / f"{job['name']}.log").read_text()[-1500:]
        res = {"status": "error", "message": f"worker exited {rc} without a result; log tail:\n{tail}"}
    res["process_s"] = time.perf_counter() - start
    return res


def autoround_order(model_dir: Path, tok, ids: torch.Tensor) -> torch.Tensor:
    """The rows of ``ids`` in the order AutoRound's calibration (same arguments as the worker)
    hands them to its tuner."""
    from transformers import AutoModelForCausalLM

    from autoround import AutoRound

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    kw = dict(nsamples=ids.shape[0], seqlen=ids.shape[1], batch_size=cs.BATCH, dataset=list(ids))
    used = AutoRound(model, tok, scheme="W4A16", group_size=GROUP, **kw).calibration()
    assert sorted(map(tuple, used.tolist())) == sorted(map(tuple, ids.tolist())), "not the same rows"
    return used


def render(report: dict) -> str:
    m = report["machine"]
    res = report["results"]
    lines = [
        f"# SmolLM2-135M W{BITS}A16 g{GROUP}: SignRoundModifier vs AutoRound API vs GPTQModifier",
        "",
        f"- date: {m['date']}; command: `{report['command']}`",
        f"- machine: {m['cpu']}, nproc {m['nproc']}, torch threads {cs.THREADS}; load average at start "
        f"{tuple(round(x, 2) for x in m['loadavg_start'])}, at end {tuple(round(x, 2) for x in report['loadavg_end'])}",
        f"- SignRound: iters {report['iters']}, batch size {cs.BATCH}, lr 1/iters, minmax tuning on; "
        f"calibration {cs.NSAMPLES} x {cs.SEQLEN} tokens (same ids for all); ppl: first {report['eval_windows']} "
        f"x {cs.EVAL_SEQLEN} windows of wiki.test.raw, fp32; llm-compressor gets the rows "
        + (
            "in AutoRound's sampling order"
            if report.get("llmc_rows_in_autoround_order")
            else "in dataset order"
        ),
        "",
        "| tool | time (s) | peak RSS (MB) | ppl | note |",
        "|---|---|---|---|---|",
    ]
    for tool, label in TOOLS.items():
        r = res.get(tool, {})
        if r.get("status") != "ok":
            lines.append(f"| {label} | {r.get('status')}: {(r.get('message') or '')[:120]} | | | |")
            continue
        note = ""
        if tool == "llmc_signround":
            note = (
                f"{r['blocks_beating_rtn']}/{r['blocks']} blocks beat RTN; pack-quantized "
                f"{r['compressed_safetensors_mb']:.1f} MB"
            )
        ppl = cs.fmt(r.get("ppl"), ".3f") + (f" ({r['eval_error'][:60]})" if r.get("eval_error") else "")
        lines.append(f"| {label} | {r['time_s']:.1f} | {r['peak_rss_mb']:.0f} | {ppl} | {note} |")
    a, b = res.get("llmc_signround", {}).get("ppl"), res.get("ours", {}).get("ppl")
    if a is not None and b is not None:
        lines += [
            "",
            f"SignRoundModifier ppl − AutoRound API ppl: **{a - b:+.3f}** (acceptance: within ±0.05)",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--eval-windows", type=int, default=cs.EVAL_WINDOWS)
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma list of {list(TOOLS)}")
    ap.add_argument(
        "--dataset-order",
        action="store_true",
        help="give llm-compressor the rows in the dataset's order, not in AutoRound's sampling order",
    )
    ap.add_argument("--out", default=str(BENCH / "out"))
    args = ap.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    out = Path(args.out)
    work, logs = out / "llmc_work", out / "logs"
    for d in (work, logs):
        d.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cs.THREADS)
    from transformers import AutoTokenizer

    from autoround.calibration import windows_from_text
    from autoround.model_sources import materialize_smollm2

    model_dir = materialize_smollm2()
    tok = AutoTokenizer.from_pretrained(model_dir)
    text = cs.CALIB_TEXT.read_text(encoding="utf-8")
    ids = windows_from_text(tok, text, cs.NSAMPLES, cs.SEQLEN, seed=0).input_ids
    ids_path = work / "calib_ids.pt"
    torch.save(ids.clone(), ids_path)
    # AutoRound draws its calibration rows in its own (seeded) order, and SignRound's batches are
    # indices into that order. llm-compressor keeps the dataset's order (no shuffling), so the
    # llm-compressor jobs get the rows in AutoRound's order: the same batches for both tuners.
    llmc_ids_path = ids_path
    if not args.dataset_order:
        llmc_ids = autoround_order(model_dir, tok, ids)
        llmc_ids_path = work / "calib_ids_autoround_order.pt"
        torch.save(llmc_ids.clone(), llmc_ids_path)
    report = {
        "command": " ".join([".venv/bin/python", "bench/llmc_compare.py", *sys.argv[1:]]),
        "machine": cs.machine_info(),
        "iters": args.iters,
        "eval_windows": args.eval_windows,
        "calib_ids_sum": int(ids.sum()),
        "llmc_rows_in_autoround_order": not args.dataset_order,
        "results": {},
    }
    ev = cs.Evaluator(model_dir, args.eval_windows)
    for tool in tools:
        job = {
            "name": f"w4g64_sr{args.iters}__{tool}",
            "kind": "quantize",
            "model_dir": str(model_dir),
            "ids_path": str(ids_path if tool == "ours" else llmc_ids_path),
            "scheme": "W4A16",
            "group_size": GROUP,
            "group": GROUP,
            "bits": BITS,
            "iters": args.iters,
            "opt_rtn": False,
            "batch_size": cs.BATCH,
            "out_dir": str(work / tool),
        }
        print(f"[{time.strftime('%H:%M:%S')}] {TOOLS[tool]} ...", flush=True)
        if tool == "llmc_signround":
            res = run_signround_worker(job, work, logs)
        else:
            res = cs.run_job("ours" if tool == "ours" else "llmc", job, work, logs, None)
        if res.get("status") == "ok":
            try:
                model = ev.load(res)
                res["ppl"], res["eval_s"] = ev.ppl(model)
                del model
                gc.collect()
            except Exception as exc:
                res["eval_error"] = f"{type(exc).__name__}: {exc}"[:500]
        report["results"][tool] = res
        print(f"    -> {res.get('status')} time {res.get('time_s')} ppl {res.get('ppl')}", flush=True)
        (out / "llmc_compare.json").write_text(json.dumps(report, indent=2, default=str))
    report["loadavg_end"] = os.getloadavg()
    (out / "llmc_compare.json").write_text(json.dumps(report, indent=2, default=str))
    md = render(report)
    (out / "llmc_compare.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
