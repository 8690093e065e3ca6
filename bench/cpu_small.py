"""The cpu-small benchmark (docs: ../shared/docs/benchmark-protocol.md), ours vs Intel auto-round
0.16.1 vs llm-compressor 0.14.0.1, side by side in one run on this CPU.

    .venv/bin/python bench/cpu_small.py                       # everything (long: see --help)
    .venv/bin/python bench/cpu_small.py --quick --rows w4g128_rtn,w4g64_sr20   # smoke test

Each quantize call runs in a fresh worker process in its tool's own venv (bench/_ours_worker.py in
this venv, bench/_intel_worker.py in Intel's, bench/_llmc_worker.py in llm-compressor's; our
packages never import theirs). Every worker gets the SAME calibration ids (a .pt file: 16 x 256
tokens of wikitext-2 valid.txt at random.Random(0) offsets), loads SmolLM2-135M in fp32 with 2
threads, and reports the quantize call's wall time and the process's peak RSS (ru_maxrss, taken
right after the call). Every perplexity (first 20 x 2048-token windows of wiki.test.raw, fp32) is
computed here by autoround.eval.perplexity on the saved result: our and Intel's auto_round
checkpoints through autoround.loading.load_dense, llm-compressor's fake-quantized weights
loaded into the fp32 model.

Writes bench/out/cpu_small.md (also printed) and bench/out/cpu_small.json (raw, rewritten after
every job, so an interrupted run keeps what it measured); worker logs in bench/out/logs/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED = REPO.parent / "shared"
CALIB_TEXT = SHARED / "data/wikitext-2/valid.txt"
EVAL_TEXT = SHARED / "data/wikitext-2-raw/wiki.test.raw"
DEV = Path.home() / ".cache/autoround-dev"
INTEL_VENV = Path(os.environ.get("AUTOROUND_INTEL_VENV", DEV / "intel-venv"))
LLMC_VENV = Path(os.environ.get("AUTOROUND_LLMC_VENV", DEV / "llmc-venv"))
THREADS = 2
NSAMPLES, SEQLEN, BATCH = 16, 256, 4
EVAL_SEQLEN, EVAL_WINDOWS = 2048, 20
N_BLOCKS = 30  # SmolLM2-135M

# key: (label, scheme, group_size override, bits, group, iters, opt_rtn)
ROWS = {
    "fp32": ("fp32 model", None, None, None, None, None, False),
    "w4g128_rtn": ("W4A16 g128 RTN", "W4A16", None, 4, 128, 0, False),
    "w4g128_optrtn": ("W4A16 g128 opt-RTN", "W4A16", None, 4, 128, 0, True),
    "w4g128_sr20": ("W4A16 g128 SignRound 20 iters", "W4A16", None, 4, 128, 20, False),
    "w4g64_sr20": ("W4A16 g64 SignRound 20 iters", "W4A16", 64, 4, 64, 20, False),
    "w2g64_rtn": ("W2A16G64 RTN", "W2A16G64", None, 2, 64, 0, False),
    "w2g64_sr20": ("W2A16G64 SignRound 20 iters", "W2A16G64", None, 2, 64, 20, False),
}
TOOLS = {
    "ours": "ours (autoround)",
    "intel": "Intel default",
    "intel_noamp": "Intel amp=False",
    "intel_noamp_algext": "Intel amp=False, enable_alg_ext",
    "llmc": "llm-compressor GPTQ",
}

#: Keyword arguments a tool always gets (beside --extra).
PRESET_KWARGS = {"intel_noamp_algext": {"enable_alg_ext": True}}


# --------------------------------------------------------------------------- setup
def venv_ok(venv: Path, want: dict[str, str]) -> bool:
    py = venv / "bin/python"
    if not py.is_file():
        return False
    code = (
        "import importlib.metadata as m,sys\nwant=%r\n"
        "sys.exit(any(not m.version(k).startswith(v) for k,v in want.items()))" % want
    )
    return subprocess.run([str(py), "-c", code], capture_output=True).returncode == 0


def setup(skip: bool, need: set[str]) -> None:
    if need & {"intel", "intel_noamp", "intel_noamp_algext"}:
        if skip:
            assert (INTEL_VENV / "bin/python").is_file(), f"--skip-setup but no Intel venv at {INTEL_VENV}"
        else:
            subprocess.run(
                ["bash", str(REPO / "scripts/intel/setup_venv.sh")],
                check=True,
                env=dict(os.environ, AUTOROUND_INTEL_VENV=str(INTEL_VENV)),
            )
    if "llmc" in need:
        want = {"torch": "2.13.0", "llmcompressor": "0.14.0.1"}
        if skip:
            assert (LLMC_VENV / "bin/python").is_file(), (
                f"--skip-setup but no llm-compressor venv at {LLMC_VENV}"
            )
        elif not venv_ok(LLMC_VENV, want):
            if not (LLMC_VENV / "bin/python").is_file():
                LLMC_VENV.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["python3", "-m", "venv", str(LLMC_VENV)], check=True)
            subprocess.run(
                [
                    str(LLMC_VENV / "bin/python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "torch==2.13.0",
                    "llmcompressor==0.14.0.1",
                ],
                check=True,
            )
            # torchvision (if pulled) does not import beside torch 2.13.0+cpu
            subprocess.run(
                [
                    str(LLMC_VENV / "bin/python"),
                    "-m",
                    "pip",
                    "uninstall",
                    "-y",
                    "-q",
                    "torchvision",
                    "torchaudio",
                ],
                capture_output=True,
            )
            assert venv_ok(LLMC_VENV, want), "llm-compressor venv: version check failed"
        print(f"llm-compressor venv ready: {LLMC_VENV}", flush=True)


def python_of(tool: str) -> str:
    if tool == "ours":
        return sys.executable
    return str((INTEL_VENV if tool.startswith("intel") else LLMC_VENV) / "bin/python")


def venv_versions(tool: str) -> str:
    code = (
        "import importlib.metadata as m\nout=[]\nfor n in ('torch','transformers','auto-round','llmcompressor','autoround-core'):\n"
        "    try: out.append(f'{n} {m.version(n)}')\n    except Exception: pass\nprint(', '.join(out))"
    )
    r = subprocess.run([python_of(tool), "-c", code], capture_output=True, text=True)
    return r.stdout.strip() or r.stderr.strip()[-200:]


def machine_info() -> dict:
    def sh(cmd: str) -> str:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"),
        "flags": "avx512_bf16" if "avx512_bf16" in sh("grep -m1 flags /proc/cpuinfo") else "no avx512_bf16",
        "nproc": sh("nproc"),
        "mem": sh("free -g | awk '/Mem:/{print $2\" GiB\"}'"),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


# --------------------------------------------------------------------------- jobs
def run_job(tool: str, job: dict, work: Path, logs: Path, timeout: float | None) -> dict:
    name = job["name"]
    job = dict(job, threads=THREADS, result_path=str(work / f"{name}.result.json"))
    Path(job["result_path"]).unlink(missing_ok=True)
    job_path = work / f"{name}.job.json"
    job_path.write_text(json.dumps(job, indent=2))
    worker = {
        "ours": "_ours_worker.py",
        "intel": "_intel_worker.py",
        "intel_noamp": "_intel_worker.py",
        "intel_noamp_algext": "_intel_worker.py",
        "llmc": "_llmc_worker.py",
    }[tool]
    env = worker_env(tool)
    start = time.perf_counter()
    with open(logs / f"{name}.log", "w") as log:
        proc = subprocess.Popen(
            [python_of(tool), str(BENCH / worker), str(job_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(work),
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return {
                "status": "timeout",
                "message": f"killed after {timeout:.0f} s",
                "process_s": time.perf_counter() - start,
            }
    return worker_result(job, logs / f"{name}.log", rc, start)


def worker_env(tool: str) -> dict[str, str]:
    """A worker's environment: offline, :data:`THREADS` threads, and for peers none of our venv's
    paths (each runs in its own venv)."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS=str(THREADS),
        MKL_NUM_THREADS=str(THREADS),
    )
    if tool != "ours":
        env.pop("PYTHONPATH", None)
        env.pop("VIRTUAL_ENV", None)
    return env


def worker_result(job: dict, log: Path, rc: int | None, start: float) -> dict:
    """The worker's result file, or an error with its exit code and log tail; plus the process time."""
    try:
        res = json.loads(Path(job["result_path"]).read_text())
    except (OSError, ValueError):
        tail = log.read_text()[-1500:]
        res = {"status": "error", "message": f"worker exited {rc} without a result; log tail:\n{tail}"}
    res["process_s"] = time.perf_counter() - start
    return res


class Evaluator:
    def __init__(self, model_dir: Path, windows: int) -> None:
        from transformers import AutoTokenizer

        self.model_dir, self.windows = model_dir, windows
        tok = AutoTokenizer.from_pretrained(model_dir)
        self.ids = tok(EVAL_TEXT.read_text(encoding="utf-8"), return_tensors="pt").input_ids

    def fp32_model(self):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)

    def load(self, res: dict):
        if res["checkpoint_kind"] == "auto_round":
            from autoround.loading import load_dense

            return load_dense(res["checkpoint"], dtype=torch.float32)
        from safetensors.torch import load_file

        model = self.fp32_model()
        state = load_file(res["checkpoint"])
        params = dict(model.named_parameters())
        unknown = [k for k in state if k not in params]
        if unknown:
            raise KeyError(f"qdq state dict names unknown tensors {unknown[:3]}")
        with torch.no_grad():
            for k, v in state.items():
                params[k].copy_(v.to(torch.float32))
        return model

    def ppl(self, model) -> tuple[float, float]:
        from autoround.eval import perplexity_of_ids

        start = time.perf_counter()
        r = perplexity_of_ids(
            model,
            self.ids,
            seqlen=EVAL_SEQLEN,
            max_windows=self.windows,
            compute_dtype=torch.float32,
            progress=False,
        )
        return r.ppl, time.perf_counter() - start


# --------------------------------------------------------------------------- report
def fmt(v, spec: str = ".2f", none: str = "—") -> str:
    return none if v is None else format(v, spec)


def render(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# cpu-small benchmark: ours vs Intel auto-round vs llm-compressor",
        "",
        f"- date: {m['date']}; command: `{report['command']}`",
        f"- machine: {m['cpu']} ({m['flags']}), nproc {m['nproc']}, {m['mem']}, torch threads {THREADS}; "
        f"load average at start {tuple(round(x, 2) for x in m['loadavg_start'])}, at end "
        f"{tuple(round(x, 2) for x in m.get('loadavg_end', (0, 0, 0)))}",
        *[f"- {TOOLS.get(t, t)} env: {v}" for t, v in report["versions"].items()],
        f"- protocol: SmolLM2-135M fp32; calibration {NSAMPLES} x {SEQLEN} tokens of wikitext-2 valid.txt "
        f"(random.Random(0) offsets, the same ids for every tool); SignRound batch size {BATCH}; "
        f"iters {report['iters']} for the SignRound rows; ppl on the first {report['eval_windows']} x "
        f"{EVAL_SEQLEN}-token windows of wiki.test.raw, fp32, computed by autoround.eval.perplexity for all tools",
        "- time = wall time of the quantize call only (model loaded, ids tokenized, save excluded); "
        "peak RSS = that worker process's own peak RSS right after the call (VmHWM; ru_maxrss of a forked worker includes the parent's RSS)",
        "",
    ]
    if report.get("quick"):
        lines += [
            "**QUICK SMOKE TEST (--quick): iters and eval windows reduced; numbers are not the protocol's.**",
            "",
        ]
    fl = report.get("floor")
    if fl:
        if fl.get("status") == "ok":
            lines += [
                f"Eager floor (fp32 fwd + MSE + bwd with weight grads, one unquantized block, "
                f"{fl['tokens'][0]} x {fl['tokens'][1]} tokens): **{fl['eager_step_s']:.3f} s**; our SignRound "
                f"iteration on that block: {fl['signround_iter_s']:.3f} s = **{fl['ratio']:.2f}x** the floor "
                f"(target ≤ 1.2x; protocol floor 0.24 s), of which {fl.get('block_setup_s', 0):.2f} s per block "
                f"is set-up (the scale search); the marginal iteration is "
                f"{fl.get('signround_marginal_iter_s', 0):.3f} s = {fl.get('marginal_ratio', 0):.2f}x.",
                "",
            ]
            if fl.get("eager_bf16_step_s"):
                bf16 = fl["eager_bf16_step_s"]
                lines += [
                    f"Native bf16 here, so our default tunes under bf16 autocast (amp): the same eager step "
                    f"under bf16 autocast takes **{bf16:.3f} s**; our iteration is "
                    f"{fl['signround_iter_s'] / bf16:.2f}x that (marginal "
                    f"{fl.get('signround_marginal_iter_s', 0) / bf16:.2f}x).",
                    "",
                ]
        else:
            lines += [f"Eager floor: {fl.get('status')}: {fl.get('message', '')[:300]}", ""]
    lines += [
        "| row | tool | time (s) | peak RSS (MB) | ppl | ours / Intel default time | ours / Intel amp=False time "
        "| ppl − Intel default | ppl − Intel amp=False |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    res = report["results"]
    for key in report["rows"]:
        label = ROWS[key][0].replace("20 iters", f"{report['iters']} iters")
        if key == "fp32":
            r = res.get("fp32", {})
            lines.append(f"| {label} | — | — | — | {fmt(r.get('ppl'))} | | | | |")
            continue
        got = res.get(key, {})
        base = {t: got.get(t, {}) for t in ("intel", "intel_noamp")}
        for tool in report["tools"]:
            if tool not in got:
                continue
            r = got[tool]
            st = r.get("status")
            if st != "ok":
                msg = (r.get("message") or "").splitlines()[0][:120] if r.get("message") else ""
                lines.append(f"| {label} | {TOOLS[tool]} | {st}: {msg} | | | | | | |")
                continue
            cells = [
                label,
                TOOLS[tool],
                fmt(r.get("time_s"), ".1f"),
                fmt(r.get("peak_rss_mb"), ".0f"),
                fmt(r.get("ppl"), ".2f") + (f" ({r['eval_error'][:60]})" if r.get("eval_error") else ""),
            ]
            for t in ("intel", "intel_noamp"):
                b = base[t]
                cells.append(
                    f"{r['time_s'] / b['time_s']:.2f}x" if tool == "ours" and b.get("status") == "ok" else ""
                )
            for t in ("intel", "intel_noamp"):
                b = base[t]
                ok = tool == "ours" and b.get("ppl") is not None and r.get("ppl") is not None
                cells.append(f"{r['ppl'] - b['ppl']:+.3f}" if ok else "")
            lines.append("| " + " | ".join(cells) + " |")
    notes = report.get("notes") or []
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {list(ROWS)}")
    ap.add_argument("--tools", default=",".join(TOOLS), help=f"comma list of {list(TOOLS)}")
    ap.add_argument("--skip-setup", action="store_true", help="use the peer venvs as they are")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 iters, 2 eval windows")
    ap.add_argument("--iters", type=int, default=None, help="SignRound iters (default 20, --quick 2)")
    ap.add_argument("--eval-windows", type=int, default=None, help="default 20, --quick 2")
    ap.add_argument("--no-floor", action="store_true", help="skip the eager-floor measurement")
    ap.add_argument(
        "--skip-intel-default-signround",
        action="store_true",
        help="skip Intel default (bf16 autocast) SignRound rows (~40 min each on this CPU)",
    )
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="TOOL=JSON",
        help="extra keyword arguments for one tool's AutoRound(...), e.g. intel_noamp='{\"enable_alg_ext\": true}'",
    )
    ap.add_argument("--job-timeout", type=float, default=None, help="kill a worker after this many seconds")
    ap.add_argument("--out", default=str(BENCH / "out"))
    args = ap.parse_args()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for r in rows:
        assert r in ROWS, f"unknown row {r!r}; known {list(ROWS)}"
    for t in tools:
        assert t in TOOLS, f"unknown tool {t!r}; known {list(TOOLS)}"
    extra = {}
    for item in args.extra:
        tool, _, payload = item.partition("=")
        assert tool in TOOLS, f"--extra: unknown tool {tool!r}; known {list(TOOLS)}"
        extra[tool] = json.loads(payload)
    iters = args.iters if args.iters is not None else (2 if args.quick else 20)
    windows = args.eval_windows if args.eval_windows is not None else (2 if args.quick else EVAL_WINDOWS)
    out = Path(args.out)
    work, logs = out / "work", out / "logs"
    for d in (work, logs):
        d.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(THREADS)

    setup(args.skip_setup, set(tools))
    from transformers import AutoTokenizer

    from autoround.calibration import windows_from_text
    from autoround.model_sources import materialize_smollm2

    model_dir = materialize_smollm2()
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = windows_from_text(tok, CALIB_TEXT.read_text(encoding="utf-8"), NSAMPLES, SEQLEN, seed=0).input_ids
    ids_path = work / "calib_ids.pt"
    torch.save(ids.clone(), ids_path)

    report = {
        "command": " ".join([".venv/bin/python", "bench/cpu_small.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "quick": args.quick,
        "iters": iters,
        "eval_windows": windows,
        "rows": rows,
        "tools": tools,
        "extra_kwargs": extra,
        "model_dir": str(model_dir),
        "calib_ids": str(ids_path),
        "calib_ids_sum": int(ids.sum()),
        "versions": {t: venv_versions(t) for t in dict.fromkeys(["ours", *tools])},
        "results": {},
        "floor": None,
        "notes": [],
    }
    print(f"model {model_dir}; calib ids {tuple(ids.shape)} -> {ids_path}", flush=True)

    def dump() -> None:
        (out / "cpu_small.json").write_text(json.dumps(report, indent=2, default=str))

    ev = Evaluator(model_dir, windows)
    if "fp32" in rows:
        model = ev.fp32_model()
        ppl, secs = ev.ppl(model)
        report["results"]["fp32"] = {"status": "ok", "ppl": ppl, "eval_s": secs}
        del model
        gc.collect()
        print(f"fp32: ppl {ppl:.3f} ({secs:.0f} s eval)", flush=True)
        dump()
    if not args.no_floor:
        report["floor"] = run_job(
            "ours",
            {
                "name": "floor",
                "kind": "floor",
                "model_dir": str(model_dir),
                "ids_path": str(ids_path),
                "batch_size": BATCH,
                "iters": iters,
            },
            work,
            logs,
            args.job_timeout,
        )
        print(
            f"floor: {json.dumps({k: v for k, v in report['floor'].items() if k != 'traceback'})}", flush=True
        )
        dump()

    for key in rows:
        if key == "fp32":
            continue
        label, scheme, gs_override, bits, group, row_iters, opt_rtn = ROWS[key]
        row_iters = iters if row_iters else 0
        for tool in tools:
            if tool in ("llmc", "intel_noamp_algext") and not row_iters:
                continue  # GPTQ stands in the SignRound rows; the extension changes tuning only
            if tool == "intel" and row_iters and args.skip_intel_default_signround:
                continue
            job = {
                "name": f"{key}__{tool}",
                "kind": "quantize",
                "model_dir": str(model_dir),
                "ids_path": str(ids_path),
                "scheme": scheme,
                "group_size": gs_override,
                "group": group,
                "bits": bits,
                "iters": row_iters,
                "opt_rtn": opt_rtn,
                "batch_size": BATCH,
                "amp": False if tool.startswith("intel_noamp") else None,
                "out_dir": str(work / f"{key}__{tool}"),
                "extra_kwargs": {**PRESET_KWARGS.get(tool, {}), **extra.get(tool, {})},
            }
            print(f"[{time.strftime('%H:%M:%S')}] {label} / {TOOLS[tool]} ...", flush=True)
            res = run_job(tool, job, work, logs, args.job_timeout)
            if res.get("status") == "ok":
                try:
                    model = ev.load(res)
                    res["ppl"], res["eval_s"] = ev.ppl(model)
                    del model
                    gc.collect()
                except Exception as exc:  # keep the timing; say why there is no ppl
                    res["eval_error"] = f"{type(exc).__name__}: {exc}"[:500]
            report["results"].setdefault(key, {})[tool] = res
            brief = {
                k: res.get(k)
                for k in ("status", "time_s", "peak_rss_mb", "ppl", "eval_error", "message")
                if res.get(k) is not None
            }
            print(f"    -> {json.dumps(brief, default=str)[:400]}", flush=True)
            dump()

    fl, res = report.get("floor") or {}, report["results"]
    sr = res.get("w4g128_sr20", {}).get("ours", {})
    rtn = res.get("w4g128_rtn", {}).get("ours", {})
    if fl.get("status") == "ok" and sr.get("status") == "ok" and iters:
        tuned_s = sr["time_s"] - (rtn.get("time_s") or 0.0)
        per_iter = tuned_s / (iters * N_BLOCKS)
        report["notes"].append(
            f"Ours end to end, W4A16 g128 SignRound: ({sr['time_s']:.1f} s − RTN {rtn.get('time_s') or 0:.1f} s) / "
            f"({iters} iters x {N_BLOCKS} blocks) = {per_iter:.3f} s per block-iteration = "
            f"{per_iter / fl['eager_step_s']:.2f}x the eager floor (includes capture and per-block overheads)."
        )
    report["machine"]["loadavg_end"] = os.getloadavg()
    dump()
    md = render(report)
    (out / "cpu_small.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
