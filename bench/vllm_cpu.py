"""vLLM CPU benchmark: SmolLM2 bf16 vs our W4A16 g128 / g64 / W2A16G64 served through our plugin.

    uv run python bench/vllm_cpu.py [--prompts 32] [--tokens 64] [--out bench/out/vllm_cpu.json]

Run from the workspace env: it makes the checkpoints with autoround-rtn (cached under
``bench/out/vllm-ckpts``), then runs this same file in the vllm-cpu venv
(``tests/vllm/setup_venv.sh``) once per row (``--worker``): ``LLM(model=path, enforce_eager=True)``
in bf16 (vLLM's CPU default), a short warm-up, then 32 prompts x 64 new tokens, greedy,
``ignore_eos``, timed as one ``generate`` call. Prints a markdown table:

* tokens/s: generated tokens / wall seconds of that call (prefill included);
* match: greedy agreement with the bf16 model, per prompt the identical prefix of the 64 tokens
  (mean fraction) and the prompts whose 64 tokens are all identical;
* engine start: seconds for ``LLM(...)``.

One extra row runs W4A16 g128 with core's ``torch`` backend (``AUTOROUND_VLLM_BACKEND=torch``:
dequantize then matmul per call) against the default ``cpu`` backend (torch's int4 op, bf16).
All rows are measured in one run, one after the other (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("AUTOROUND_VLLM_VENV", Path.home() / ".cache/autoround-dev/vllm-venv"))
CKPTS = ROOT / "bench/out/vllm-ckpts"
#: Row label -> (checkpoint name or "bf16", autoround-rtn arguments, backend override).
ROWS: dict[str, tuple[str, list[str], str | None]] = {
    "SmolLM2 bf16": ("bf16", [], None),
    "W4A16 g128": ("w4a16_g128", ["--scheme", "W4A16"], None),
    "W4A16 g64": ("w4a16_g64", ["--scheme", "W4A16", "--group_size", "64"], None),
    "W2A16G64": ("w2a16_g64", ["--scheme", "W2A16G64"], None),
    "W4A16 g128, torch backend": ("w4a16_g128", ["--scheme", "W4A16"], "torch"),
}


def prompts(count: int, words: int = 24) -> list[str]:
    """The first ``count`` wikitext-2 validation paragraphs, cut to ``words`` words."""
    from importlib.resources import files

    text = files("autoround.data").joinpath("wikitext2_valid.txt").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if len(line.split()) > words and "=" not in line]
    return [" ".join(line.split()[:words]) for line in lines[:count]]


def checkpoint(name: str, args: list[str]) -> Path:
    """The SmolLM2 bf16 directory, or one of our checkpoints (made once with autoround-rtn)."""
    if name == "bf16":
        from autoround.model_sources import materialize_smollm2

        return materialize_smollm2()
    target = CKPTS / name
    if not (target / "config.json").exists():
        from autoround.cli import main_rtn

        assert main_rtn(["--model", "smollm2", *args, "--output_dir", str(target), "--overwrite", "-q"]) == 0
    return target


def worker(path: str, request_path: str, result_path: str) -> None:
    """In the vLLM venv: serve ``path`` and time the greedy generation of the request's prompts."""
    from vllm import LLM, SamplingParams

    request = json.loads(Path(request_path).read_text())
    start = time.perf_counter()
    llm = LLM(model=path, enforce_eager=True, max_model_len=512, seed=0)
    started = time.perf_counter() - start
    params = SamplingParams(temperature=0.0, max_tokens=request["tokens"], ignore_eos=True)
    llm.generate(request["prompts"][:2], SamplingParams(temperature=0.0, max_tokens=4), use_tqdm=False)
    start = time.perf_counter()
    outputs = llm.generate(request["prompts"], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    quantization = llm.llm_engine.vllm_config.model_config.quantization
    result = {"start_s": started, "seconds": seconds, "tokens": tokens, "quantization": quantization}
    Path(result_path).write_text(json.dumps(result))


def match(tokens: list[list[int]], reference: list[list[int]]) -> tuple[float, int]:
    """(mean identical-prefix fraction, prompts identical in full) against the reference."""
    fractions, full = [], 0
    for ours, ref in zip(tokens, reference, strict=True):
        same = next((i for i, (a, b) in enumerate(zip(ours, ref, strict=True)) if a != b), len(ref))
        fractions.append(same / len(ref))
        full += same == len(ref)
    return sum(fractions) / len(fractions), full


def run_row(label: str, path: Path, backend: str | None, request: Path, out_dir: Path) -> dict:
    result = out_dir / f"{label.replace(' ', '_').replace(',', '')}.json"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "TOKENIZERS_PARALLELISM": "false"}
    if backend:
        env["AUTOROUND_VLLM_BACKEND"] = backend
    cmd = [str(VENV / "bin/python"), __file__, "--worker", str(path), str(request), str(result)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{label}: worker failed\n{(proc.stdout + proc.stderr)[-4000:]}")
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help=f"subset of {list(ROWS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/out/vllm_cpu.json")
    args = parser.parse_args()
    out_dir = args.out.parent / "vllm_cpu_rows"
    out_dir.mkdir(parents=True, exist_ok=True)
    request = out_dir / "request.json"
    request.write_text(json.dumps({"prompts": prompts(args.prompts), "tokens": args.tokens}))
    results = {}
    for label in args.rows:
        name, rtn_args, backend = ROWS[label]
        results[label] = run_row(label, checkpoint(name, rtn_args), backend, request, out_dir)
        r = results[label]
        print(f"{label}: {args.prompts * args.tokens / r['seconds']:.1f} tok/s", file=sys.stderr)
    reference = results.get("SmolLM2 bf16", {}).get("tokens")
    print(f"vllm-cpu 0.32.0, {args.prompts} prompts x {args.tokens} tokens, greedy, bf16, enforce_eager; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")  # fmt: skip
    print("| model | method | tokens/s | greedy match vs bf16 (prefix / full prompts) | engine start s |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        rate = args.prompts * args.tokens / r["seconds"]
        agree = "—"
        if reference is not None and label != "SmolLM2 bf16":
            prefix, full = match(r["tokens"], reference)
            agree = f"{prefix:.1%} / {full}/{args.prompts}"
        print(f"| {label} | {r['quantization'] or 'none'} | {rate:.1f} | {agree} | {r['start_s']:.0f} |")
    args.out.write_text(json.dumps({k: {**v, "tokens": None} for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:5])
    else:
        main()
