"""Float weight data types on the cpu-small protocol: ours vs Intel auto-round 0.16.1 vs
llm-compressor 0.14's ``QuantizationModifier``, side by side in one run.

    .venv/bin/python bench/float_cpu.py                  # all rows (~30-40 min on the 2-core CPU)
    .venv/bin/python bench/float_cpu.py --quick --rows mxfp4_rtn   # smoke test

Rows: MXFP4, NVFP4 and MXFP8 in their weight-only forms (``act_bits=16``) and FPW8A16, with plain
round-to-nearest, each tool's default for ``iters=0`` (optimized RTN) and SignRound 20 iters;
INT8_W8A8, FP8_BLOCK, FP8_STATIC and MXFP4 / NVFP4 as given (W4A4) with their activations: every
tool's weights are evaluated with the same activation quantize-dequantize on each decoder Linear's
input (autoround's hooks, Intel's formulas; the calibrated ranges of FP8_STATIC and NVFP4 those
of the fp32 model on the calibration ids, as round-to-nearest calibrates them, the same for all).
Every quantize call runs in a fresh worker process (bench/_ours_worker.py in this venv,
bench/_intel_worker.py in Intel's, bench/_llmc_float_worker.py in llm-compressor's) with the SAME
calibration ids as bench/cpu_small.py (16 x 256 tokens of wikitext-2 valid.txt), SmolLM2-135M in
fp32, 2 threads. Each worker saves its quantize-dequantized Linear weights (no format stores every
one of these schemes for all three tools), and every perplexity (first 20 x 2048-token windows of
wiki.test.raw, fp32) is computed here, by the same evaluator, on those weights.

Writes bench/out/float_cpu.md (also printed) and bench/out/float_cpu.json (rewritten after every
job); worker logs in bench/out/logs/.
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

WEIGHT_ONLY = {"act_bits": 16}
FP8_TENSOR = {
    "group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "tensor"},
    }
}
#: Intel's FP8_STATIC: FP8 per-channel weights, one static FP8 scale per tensor for the input
#: (compressed-tensors' FP8 preset has per-tensor weights: not the same scheme).
FP8_STATIC = {
    "group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel"},
        "input_activations": {
            "num_bits": 8,
            "type": "float",
            "symmetric": True,
            "strategy": "tensor",
            "dynamic": False,
        },
    }
}
# key: (label, our/Intel scheme, their extra kwargs, mode, llm-compressor recipe or None); mode
# "rtn" is plain round-to-nearest, "opt_rtn" each tool's default for iters=0, "signround" tuning
ROWS = {
    "mxfp4_rtn": ("MXFP4 (W4A16) RTN", "MXFP4", WEIGHT_ONLY, "rtn", {"preset": "MXFP4A16"}),
    "mxfp4_optrtn": ("MXFP4 (W4A16) opt-RTN", "MXFP4", WEIGHT_ONLY, "opt_rtn", None),
    "mxfp4_sr20": ("MXFP4 (W4A16) SignRound", "MXFP4", WEIGHT_ONLY, "signround", None),
    "nvfp4_rtn": ("NVFP4 (W4A16) RTN", "NVFP4", WEIGHT_ONLY, "rtn", {"preset": "NVFP4A16"}),
    "nvfp4_optrtn": ("NVFP4 (W4A16) opt-RTN", "NVFP4", WEIGHT_ONLY, "opt_rtn", None),
    "nvfp4_sr20": ("NVFP4 (W4A16) SignRound", "NVFP4", WEIGHT_ONLY, "signround", None),
    "mxfp8_rtn": ("MXFP8 (W8A16) RTN", "MXFP8", WEIGHT_ONLY, "rtn", {"preset": "MXFP8A16"}),
    "mxfp8_optrtn": ("MXFP8 (W8A16) opt-RTN", "MXFP8", WEIGHT_ONLY, "opt_rtn", None),
    "mxfp8_sr20": ("MXFP8 (W8A16) SignRound", "MXFP8", WEIGHT_ONLY, "signround", None),
    "fpw8a16_rtn": ("FPW8A16 RTN", "FPW8A16", {}, "rtn", {"config_groups": FP8_TENSOR}),
    "fpw8a16_sr20": ("FPW8A16 SignRound", "FPW8A16", {}, "signround", None),
    "int8_w8a8_rtn": ("INT8_W8A8 RTN", "INT8_W8A8", {}, "rtn", {"preset": "W8A8"}),
    "int8_w8a8_sr20": ("INT8_W8A8 SignRound", "INT8_W8A8", {}, "signround", None),
    "fp8_block_rtn": ("FP8_BLOCK RTN", "FP8_BLOCK", {}, "rtn", {"preset": "FP8_BLOCK"}),
    "fp8_block_sr20": ("FP8_BLOCK SignRound", "FP8_BLOCK", {}, "signround", None),
    "mxfp4_w4a4_rtn": ("MXFP4 (W4A4) RTN", "MXFP4", {}, "rtn", {"preset": "MXFP4"}),
    "mxfp4_w4a4_sr20": ("MXFP4 (W4A4) SignRound", "MXFP4", {}, "signround", None),
    "nvfp4_w4a4_rtn": ("NVFP4 (W4A4) RTN", "NVFP4", {}, "rtn", {"preset": "NVFP4"}),
    "nvfp4_w4a4_sr20": ("NVFP4 (W4A4) SignRound", "NVFP4", {}, "signround", None),
    "fp8_static_rtn": ("FP8_STATIC RTN", "FP8_STATIC", {}, "rtn", {"config_groups": FP8_STATIC}),
    "fp8_static_sr20": ("FP8_STATIC SignRound", "FP8_STATIC", {}, "signround", None),
}
TOOLS = {"ours": "ours (autoround)", "intel": "Intel default", "llmc": "llm-compressor QuantizationModifier"}


def emulate_activations(model, scheme: str, extra: dict, ranges: dict | None = None) -> int:
    """Give every decoder Linear of ``model`` the row scheme's activation quantize-dequantize
    (autoround's hooks, Intel's formulas): every tool's weights are evaluated with the same
    activation emulation; calibrated kinds (FP8_STATIC, NVFP4's) with the same ``ranges`` (name ->
    largest |input|, :func:`calibrated_ranges`). Returns how many layers quantize their inputs."""
    from autoround.nn import attach_act_quant

    layers = decoder_layers(model, scheme, extra)
    return attach_act_quant(model, layers, ranges) if layers else 0


def decoder_layers(model, scheme: str, extra: dict) -> dict:
    """Decoder Linear name -> the row's scheme, for a scheme that quantizes activations (else {})."""
    from autoround.schemes import parse_scheme

    resolved = parse_scheme(scheme, **extra)
    if resolved.is_weight_only:
        return {}
    return {
        name: resolved
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers.")
    }


def calibrated_ranges(ev, scheme: str, extra: dict, ids: torch.Tensor) -> dict | None:
    """For a scheme with calibrated activations: every decoder Linear's largest |input| on the
    calibration ids in the fp32 model (what round-to-nearest calibrates, autoround's and Intel's
    rule), one set of ranges for every tool's weights; None for the other schemes."""
    from autoround.algorithms import calibrate_model, calibrated_layers

    fp32 = ev.fp32_model()
    layers = decoder_layers(fp32, scheme, extra)
    names = calibrated_layers(layers)
    if not names:
        return None
    return calibrate_model(fp32, names, ids, batch_size=cs.BATCH, progress=False)


def own_ranges_ppl(ev, model, scheme: str, extra: dict, ranges_path: str) -> float:
    """Perplexity of ``model`` with the activation ranges its tool left after tuning (the tuned
    factor on each calibrated range applied: what the tool's checkpoint serves with), instead of
    the shared untuned ones."""
    from safetensors.torch import load_file

    emulate_activations(model, scheme, extra, load_file(ranges_path))
    return ev.ppl(model)[0]


def run_llmc(job: dict, work: Path, logs: Path, timeout: float | None) -> dict:
    """bench/_llmc_float_worker.py in llm-compressor's venv, as cpu_small.run_job runs the others."""
    job = dict(job, threads=cs.THREADS, result_path=str(work / f"{job['name']}.result.json"))
    Path(job["result_path"]).unlink(missing_ok=True)
    job_path = work / f"{job['name']}.job.json"
    job_path.write_text(json.dumps(job, indent=2))
    start = time.perf_counter()
    with open(logs / f"{job['name']}.log", "w") as log:
        worker = str(BENCH / "_llmc_float_worker.py")
        try:
            proc = subprocess.run(
                [cs.python_of("llmc"), worker, str(job_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=cs.worker_env("llmc"),
                cwd=str(work),
                timeout=timeout,
            )
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "message": f"killed after {timeout} s"}
    return cs.worker_result(job, logs / f"{job['name']}.log", rc, start)


def render(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Float weight data types, cpu-small: ours vs Intel auto-round vs llm-compressor",
        "",
        f"- date: {m['date']}; command: `{report['command']}`",
        f"- machine: {m['cpu']} ({m['flags']}), nproc {m['nproc']}, {m['mem']}, torch threads {cs.THREADS}; "
        f"load average at start {tuple(round(x, 2) for x in m['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in m.get('loadavg_end', (0, 0, 0)))}",
        *[f"- {TOOLS.get(t, t)} env: {v}" for t, v in report["versions"].items()],
        f"- SignRound rows: {report['iters']} iters, batch {cs.BATCH}, seed {'the default (42)' if report.get('seed') is None else report['seed']}; ppl on {report['eval_windows']} x "
        f"{cs.EVAL_SEQLEN}-token windows of wiki.test.raw, fp32, on each tool's quantize-dequantized weights",
        "",
        "| row | tool | time (s) | peak RSS (MB) | ppl | ours / Intel time | ppl − Intel | ppl − llm-compressor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    res = report["results"]
    if "fp32" in res:
        lines.append(f"| fp32 model | — | — | — | {cs.fmt(res['fp32'].get('ppl'))} | | | |")
    own = [
        f"- {ROWS[key][0]} / {TOOLS[tool]}: ppl {r['ppl_own_ranges']:.3f} with its own tuned activation ranges"
        for key in report["rows"]
        for tool, r in res.get(key, {}).items()
        if r.get("ppl_own_ranges") is not None
    ]
    for key in report["rows"]:
        got = res.get(key, {})
        intel, llmc = got.get("intel", {}), got.get("llmc", {})
        for tool, r in got.items():
            if r.get("status") != "ok":
                msg = (r.get("message") or "").splitlines()[0][:120] if r.get("message") else ""
                lines.append(f"| {ROWS[key][0]} | {TOOLS[tool]} | {r.get('status')}: {msg} | | | | | |")
                continue
            mine = tool == "ours"
            ratio = f"{r['time_s'] / intel['time_s']:.2f}x" if mine and intel.get("status") == "ok" else ""
            d_intel = f"{r['ppl'] - intel['ppl']:+.3f}" if mine and intel.get("ppl") and r.get("ppl") else ""
            d_llmc = f"{r['ppl'] - llmc['ppl']:+.3f}" if mine and llmc.get("ppl") and r.get("ppl") else ""
            lines.append(
                f"| {ROWS[key][0]} | {TOOLS[tool]} | {r['time_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                f"{cs.fmt(r.get('ppl'), '.3f')} | {ratio} | {d_intel} | {d_llmc} |"
            )
    return "\n".join([*lines, *([""] if own else []), *own]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(["fp32", *ROWS]), help=f"comma list of fp32 and {list(ROWS)}")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma list of {list(TOOLS)}")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 iters, 2 eval windows")
    ap.add_argument("--iters", type=int, default=None, help="SignRound iters (default 20, --quick 2)")
    ap.add_argument("--eval-windows", type=int, default=None)
    ap.add_argument("--job-timeout", type=float, default=None)
    ap.add_argument(
        "--seed", type=int, default=None, help="SignRound seed of ours and Intel's (default: each one's, 42)"
    )
    ap.add_argument(
        "--no-own-ranges",
        action="store_true",
        help="calibrated rows: skip the second perplexity, with each tool's tuned ranges",
    )
    ap.add_argument("--out", default=str(BENCH / "out"))
    args = ap.parse_args()
    rows = [r for r in args.rows.split(",") if r]
    tools = [t for t in args.tools.split(",") if t]
    for r in rows:
        assert r == "fp32" or r in ROWS, f"unknown row {r!r}; known fp32, {list(ROWS)}"
    for t in tools:
        assert t in TOOLS, f"unknown tool {t!r}; known {list(TOOLS)}"
    iters = args.iters if args.iters is not None else (2 if args.quick else 20)
    windows = args.eval_windows or (2 if args.quick else cs.EVAL_WINDOWS)
    out = Path(args.out)
    work, logs = out / "work", out / "logs"
    for d in (work, logs):
        d.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cs.THREADS)
    cs.setup(True, set(tools) & {"intel"})

    from transformers import AutoTokenizer

    from autoround.calibration import windows_from_text
    from autoround.model_sources import materialize_smollm2

    model_dir = materialize_smollm2()
    tok = AutoTokenizer.from_pretrained(model_dir)
    text = cs.CALIB_TEXT.read_text(encoding="utf-8")
    ids = windows_from_text(tok, text, cs.NSAMPLES, cs.SEQLEN, seed=0).input_ids
    ids_path = work / "calib_ids.pt"
    torch.save(ids.clone(), ids_path)
    report: dict = {
        "command": " ".join([".venv/bin/python", "bench/float_cpu.py", *sys.argv[1:]]),
        "machine": cs.machine_info(),
        "iters": iters,
        "seed": args.seed,
        "eval_windows": windows,
        "rows": [r for r in rows if r != "fp32"],
        "versions": {t: cs.venv_versions(t) for t in tools},
        "results": {},
    }

    def dump() -> None:
        (out / "float_cpu.json").write_text(json.dumps(report, indent=2, default=str))

    ev = cs.Evaluator(model_dir, windows)
    if "fp32" in rows:
        ppl, secs = ev.ppl(ev.fp32_model())
        report["results"]["fp32"] = {"status": "ok", "ppl": ppl, "eval_s": secs}
        print(f"fp32: ppl {ppl:.3f}", flush=True)
    for key in report["rows"]:
        label, scheme, extra, mode, llmc = ROWS[key]
        ranges = calibrated_ranges(ev, scheme, extra, ids)
        for tool in tools:
            if tool == "llmc" and llmc is None:
                continue
            job = {
                "name": f"float_{key}__{tool}",
                "kind": "quantize",
                "model_dir": str(model_dir),
                "ids_path": str(ids_path),
                "scheme": scheme,
                "iters": iters if mode == "signround" else 0,
                "opt_rtn": mode == "opt_rtn",
                "batch_size": cs.BATCH,
                "save": "qdq",
                "llmc": llmc,
                "out_dir": str(work / f"float_{key}__{tool}"),
                "extra_kwargs": extra
                if args.seed is None or tool == "llmc"
                else {**extra, "seed": args.seed},
            }
            print(f"[{time.strftime('%H:%M:%S')}] {label} / {TOOLS[tool]} ...", flush=True)
            if tool == "llmc":
                res = run_llmc(job, work, logs, args.job_timeout)
            else:
                res = cs.run_job(tool, job, work, logs, args.job_timeout)
            if res.get("status") == "ok":
                try:
                    model = ev.load(res)
                    res["act_quant_layers"] = emulate_activations(model, scheme, extra, ranges)
                    res["ppl"], res["eval_s"] = ev.ppl(model)
                    if ranges is not None and res.get("ranges") and not args.no_own_ranges:
                        res["ppl_own_ranges"] = own_ranges_ppl(ev, model, scheme, extra, res["ranges"])
                    del model
                    gc.collect()
                except Exception as exc:  # keep the timing; say why there is no ppl
                    res["eval_error"] = f"{type(exc).__name__}: {exc}"[:500]
            report["results"].setdefault(key, {})[tool] = res
            brief = {
                k: res.get(k)
                for k in ("status", "time_s", "peak_rss_mb", "ppl", "ppl_own_ranges", "message")
                if k in res
            }
            print(f"    -> {json.dumps(brief, default=str)[:300]}", flush=True)
            dump()
    report["machine"]["loadavg_end"] = os.getloadavg()
    dump()
    md = render(report)
    (out / "float_cpu.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
