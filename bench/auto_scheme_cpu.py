"""AutoScheme on SmolLM2-135M (issue 21): ours vs Intel auto-round 0.16.1, side by side in one run.

    .venv/bin/python bench/auto_scheme_cpu.py                      # 3.0 / 4.5 bits, RTN + SignRound 20
    .venv/bin/python bench/auto_scheme_cpu.py --quick --tools ours # smoke test (minutes)

For each target (``--avg-bits``, default 3.0 and 4.5) over ``--options`` (default
W2A16G64,W4A16,W8A16), each tool runs ``AutoRound(model, tok, scheme=AutoScheme(avg_bits, options,
nsamples=16, seqlen=256), iters=..., nsamples=16, seqlen=256, batch_size=4,
dataset=<jsonl>).quantize_and_save(dir)`` in a fresh worker process in its own venv
(bench/_auto_scheme_worker.py; Intel with ``amp=False``: fp32 on this CPU, as ours), once with
RTN (``iters=0, disable_opt_rtn=True``: the call's time is the search plus a second of RTN) and
once with SignRound (``--iters``, default 20). Both tools read the same calibration file: 64
chunks of wikitext-2 valid.txt as .jsonl (Intel's AutoScheme takes only a dataset string, so the
pre-tokenized ids of bench/cpu_small.py cannot be shared; each tool samples its own windows).

Reported per row: the plan's bits per weight (every decoder-block Linear of the saved checkpoint,
counted by autoround.auto_scheme.layer_bits, Intel's count, for both tools' checkpoints), layers
per scheme, the call's wall time and peak RSS (VmHWM), and perplexity (cpu-small protocol: first
20 x 2048-token windows of wiki.test.raw, fp32, computed here on load_dense of each checkpoint).
Writes bench/out/auto_scheme_cpu.json (after every job) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import cpu_small  # noqa: E402  (the cpu-small setup, venvs and evaluator)

OPTIONS = "W2A16G64,W4A16,W8A16"
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
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="2",
        MKL_NUM_THREADS="2",
    )
    if tool != "ours":
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
    start = time.perf_counter()
    with open(logs / f"{name}.log", "w") as log:
        command = [
            cpu_small.python_of(tool),
            str(BENCH / "_auto_scheme_worker.py"),
            str(work / f"{name}.job.json"),
        ]
        rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(work)).returncode
    try:
        result = json.loads(Path(job["result_path"]).read_text())
    except (OSError, ValueError):
        tail = (logs / f"{name}.log").read_text()[-1500:]
        result = {"status": "error", "message": f"worker exited {rc} without a result; log tail:\n{tail}"}
    result["process_s"] = time.perf_counter() - start
    return result


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
    head = "| target | algorithm | tool | plan bits | layers per scheme | time (s) | peak RSS (MB) | ppl |"
    rows = [head, "|---|---|---|---|---|---|---|---|"]
    for key, res in report["results"].items():
        target, algorithm, tool = key.split("/")
        if res.get("status") != "ok":
            rows.append(f"| {target} | {algorithm} | {tool} | {res.get('message', '')[:80]} | | | | |")
            continue
        layers = ", ".join(f"{k} x {v}" for k, v in sorted(res["plan"]["layers"].items()))
        rows.append(
            f"| {target} | {algorithm} | {tool} | {res['plan']['avg_bits']:.3f} | {layers} | "
            f"{res['time_s']:.1f} | {res['peak_rss_mb']:.0f} | {res['ppl']:.3f} |"
        )
    fp32 = report.get("fp32_ppl")
    return "\n".join(rows) + (f"\n\nfp32 model: ppl {fp32:.3f}" if fp32 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avg-bits", default="3.0,4.5")
    ap.add_argument("--options", default=OPTIONS)
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--iters", type=int, default=None, help="SignRound iterations (default 20; --quick 2)")
    ap.add_argument("--no-signround", action="store_true", help="RTN rows only")
    ap.add_argument("--quick", action="store_true", help="2 iters, 2 eval windows, 4 search samples")
    ap.add_argument("--eval-windows", type=int, default=None, help="default 20 (--quick 2)")
    ap.add_argument("--search-nsamples", type=int, default=None, help="default 16 (--quick 4)")
    ap.add_argument("--skip-setup", action="store_true", help="use Intel's venv as it is")
    ap.add_argument("--out", default=str(BENCH / "out"))
    args = ap.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    iters = args.iters if args.iters is not None else (2 if args.quick else 20)
    windows = args.eval_windows or (2 if args.quick else cpu_small.EVAL_WINDOWS)
    out = Path(args.out)
    work, logs = out / "auto_scheme_work", out / "logs"
    for d in (work, logs):
        d.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cpu_small.THREADS)
    cpu_small.setup(args.skip_setup, set(tools))
    from autoround.model_sources import materialize_smollm2

    model_dir = materialize_smollm2()
    dataset = calibration_file(work / "calibration.jsonl")
    report: dict = {
        "command": " ".join([".venv/bin/python", "bench/auto_scheme_cpu.py", *sys.argv[1:]]),
        "machine": cpu_small.machine_info(),
        "versions": {t: cpu_small.venv_versions(t) for t in tools},
        "options": args.options,
        "iters": iters,
        "eval_windows": windows,
        "results": {},
    }
    ev = cpu_small.Evaluator(model_dir, windows)
    fp32 = ev.fp32_model()
    report["fp32_ppl"] = ev.ppl(fp32)[0]
    algorithms = {"rtn": 0} if args.no_signround else {"rtn": 0, f"signround{iters}": iters}
    search = args.search_nsamples or (4 if args.quick else NSAMPLES)
    for target in [float(t) for t in args.avg_bits.split(",")]:
        for algorithm, algorithm_iters in algorithms.items():
            for tool in tools:
                key = f"{target}/{algorithm}/{tool}"
                name = key.replace("/", "_")
                job = {
                    "name": name,
                    "model_dir": str(model_dir),
                    "avg_bits": target,
                    "options": args.options,
                    "iters": algorithm_iters,
                    "nsamples": NSAMPLES,
                    "seqlen": SEQLEN,
                    "batch_size": BATCH,
                    "search_nsamples": search,
                    "search_seqlen": SEQLEN,
                    "dataset": str(dataset),
                    "out_dir": str(work / name),
                }
                result = run(tool, job, work, logs)
                if result.get("status") == "ok":
                    result["plan"] = plan_of(result["checkpoint"], fp32)
                    result["ppl"] = ev.ppl(ev.load({**result, "checkpoint_kind": "auto_round"}))[0]
                report["results"][key] = result
                (out / "auto_scheme_cpu.json").write_text(json.dumps(report, indent=2, default=str))
                print(render({"results": {key: result}}).splitlines()[-1], flush=True)
    print(render(report))


if __name__ == "__main__":
    main()
