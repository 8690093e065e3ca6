"""Full benchmark protocol for SmolLM2 on the GPU (issue 10): our quantize time, peak memory, perplexity.

    PYTHONPATH=packages/autoround-core/src python3 bench/signround_gpu.py \\
        --gguf /tmp/SmolLM2-135M-Instruct.Q4_1.gguf --eval-text .gpu/wiki.test.raw --rows rtn,default

Follows ``benchmark-protocol.md``: the GGUF is converted once into a bf16 HF checkpoint; the
model is loaded in bf16 on the GPU; calibration is 128 x 2048 windows of the shipped wikitext-2
validation text at ``random.Random(0)`` offsets (batch size 8); the quantize call alone is timed
(model loaded, ids tokenized) with peak ``torch.cuda.max_memory_allocated``; perplexity is the
whole of ``wiki.test.raw`` in 2048-token windows (147 for SmolLM2), computed in bf16 on the saved
and reloaded checkpoint.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from autoround import AutoRound, load_quantized, save
from autoround.calibration import windows_from_text
from autoround.eval import perplexity_of_file
from autoround.model_sources import load_model_and_tokenizer, materialize_smollm2

VALID_TEXT = Path(__file__).parents[1] / "packages/autoround-core/src/autoround/data/wikitext2_valid.txt"
# row -> AutoRound arguments (Intel's recipes)
ROWS = {
    "rtn": dict(scheme="W4A16", iters=0, disable_opt_rtn=True),
    "opt_rtn": dict(scheme="W4A16", iters=0, disable_opt_rtn=False),
    "light": dict(scheme="W4A16", iters=50, lr=5e-3),
    "default": dict(scheme="W4A16", iters=200),
    "w2_rtn": dict(scheme="W2A16G64", iters=0, disable_opt_rtn=True),
    "w2_default": dict(scheme="W2A16G64", iters=200),
}


def run_row(name: str, model_dir: Path, ids: torch.Tensor, args: argparse.Namespace, scratch: Path) -> dict:
    model, tokenizer = load_model_and_tokenizer(str(model_dir), dtype=torch.bfloat16, device=args.device)
    model.to(args.device)
    _sync(args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    recipe = dict(ROWS[name])
    if args.iters is not None and recipe["iters"]:
        recipe["iters"] = args.iters
    ar = AutoRound(model, tokenizer, nsamples=ids.shape[0], seqlen=ids.shape[1], batch_size=8,
                   dataset=list(ids), device_map=args.device, **recipe)  # fmt: skip
    start = time.perf_counter()
    qm = ar.quantize()
    _sync(args.device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
    out = scratch / name
    save(qm, out, overwrite=True)
    del model, qm, ar
    quantized = load_quantized(out, dtype=torch.bfloat16, device=args.device)
    ppl = perplexity_of_file(
        quantized, tokenizer, args.eval_text, max_windows=args.max_windows, progress=False
    ).ppl
    return {"row": name, "recipe": recipe, "quantize_s": seconds, "peak_gib": peak, "ppl": ppl}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--eval-text", required=True, help="wiki.test.raw")
    parser.add_argument(
        "--rows", default="rtn,default,w2_default", help=f"comma-separated, from {sorted(ROWS)}"
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--nsamples", type=int, default=128, help="protocol: 128 (smaller only for smoke tests)"
    )
    parser.add_argument("--seqlen", type=int, default=2048, help="protocol: 2048")
    parser.add_argument("--iters", type=int, help="override the tuned rows' iterations (smoke tests)")
    parser.add_argument("--max-windows", type=int, help="evaluate only this many windows (smoke tests)")
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {sorted(ROWS)}")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        model_dir = materialize_smollm2(scratch / "cache", gguf_path=args.gguf)
        model, tokenizer = load_model_and_tokenizer(str(model_dir), dtype=torch.bfloat16, device=args.device)
        ids = windows_from_text(
            tokenizer, VALID_TEXT.read_text(), args.nsamples, args.seqlen, seed=0
        ).input_ids
        model.to(args.device)
        base = perplexity_of_file(
            model, tokenizer, args.eval_text, max_windows=args.max_windows, progress=False
        )
        device = torch.cuda.get_device_name() if args.device == "cuda" else args.device
        print(f"device: {device}, torch {torch.__version__}")
        print(f"bf16 model: ppl {base.ppl:.3f} over {base.windows} windows", flush=True)
        del model
        results = [{"row": "bf16", "ppl": base.ppl, "windows": base.windows}]
        print("| row | quantize s | peak GiB | ppl |\n|---|---|---|---|")
        for name in rows:
            result = run_row(name, model_dir, ids, args, scratch)
            results.append(result)
            print(
                f"| {name} | {result['quantize_s']:.1f} | {result['peak_gib']:.2f} | {result['ppl']:.3f} |",
                flush=True,
            )
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
