"""SignRound on the GPU, ours and Intel auto-round 0.16.1 side by side in one run (issue 25).

    PYTHONPATH=packages/autoround-core/src:/tmp/site python3 bench/signround_gpu_vs_intel.py \\
        --gguf /tmp/m/SmolLM2-135M-Instruct.Q4_1.gguf --eval-text wiki.test.raw \\
        --rows smollm2_w4,llama1b_w4 --json $OUT/vs_intel.json

Full protocol (``benchmark-protocol.md``): the bf16 model loaded onto the GPU, 128 x 2048
calibration windows of the shipped wikitext-2 validation text at ``random.Random(0)`` offsets,
batch size 8, Intel's default recipe (200 iterations); the quantize call alone is timed, with
peak ``torch.cuda.max_memory_allocated``; each tool runs in its own process
(``_gpu_quantize_worker.py``), so neither inherits the other's allocator state. Perplexity is
the whole of ``wiki.test.raw`` in 2048-token windows, bf16, of each tool's saved ``auto_round``
checkpoint reloaded by the same loader. The Llama shapes have random weights: time and memory
only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from autoround import load_quantized
from autoround.calibration import windows_from_text
from autoround.eval import perplexity_of_file
from autoround.model_sources import materialize_smollm2

HERE = Path(__file__).parent
VALID_TEXT = HERE.parent / "packages/autoround-core/src/autoround/data/wikitext2_valid.txt"
LLAMA_SHAPES = {
    "smollm2_random": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                           num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "llama1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=49152),
    "llama8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=49152),
}  # fmt: skip
DEFAULT = dict(iters=200, nsamples=128, seqlen=2048, batch_size=8)
ROWS = {
    "smollm2_w4": ("smollm2", dict(scheme="W4A16", **DEFAULT)),
    "smollm2_w2": ("smollm2", dict(scheme="W2A16G64", **DEFAULT)),
    "smollm2_random_w4": ("smollm2_random", dict(scheme="W4A16", **DEFAULT)),
    "llama1b_w4": ("llama1b", dict(scheme="W4A16", **DEFAULT)),
    "llama8b_w4": ("llama8b", dict(scheme="W4A16", **DEFAULT)),
}


def random_llama(shape: str, tokenizer_dir: Path, target: Path) -> Path:
    """A seeded random bf16 Llama of ``shape`` saved with SmolLM2's tokenizer (same vocabulary)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    if not target.exists():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(LlamaConfig(**LLAMA_SHAPES[shape]), dtype=torch.bfloat16)
        model.save_pretrained(target)
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(target)
    return target


def run_tool(tool: str, row: str, model_dir: Path, ids_path: Path, scratch: Path) -> dict:
    out = scratch / f"{row}-{tool}"
    job = {
        "tool": tool,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "model_dir": str(model_dir),
        "ids_path": str(ids_path),
        "recipe": ROWS[row][1],
        "out_dir": str(out),
        "result_path": str(scratch / f"{row}-{tool}.json"),
    }
    job_path = scratch / f"{row}-{tool}.job.json"
    job_path.write_text(json.dumps(job))
    done = subprocess.run(
        [sys.executable, str(HERE / "_gpu_quantize_worker.py"), str(job_path)], env=os.environ
    )
    if done.returncode != 0:
        return {"row": row, "tool": tool, "status": f"worker exited {done.returncode}"}
    return {"row": row, "tool": tool, **json.loads(Path(job["result_path"]).read_text()), "out": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", help="SmolLM2-135M-Instruct.Q4_1.gguf (the smollm2 rows need it)")
    parser.add_argument("--tokenizer", help="a SmolLM2 tokenizer directory, when there is no --gguf")
    parser.add_argument("--eval-text", help="wiki.test.raw (the smollm2 rows need it)")
    parser.add_argument(
        "--rows", default="smollm2_w4,llama1b_w4", help=f"comma-separated, from {sorted(ROWS)}"
    )
    parser.add_argument("--tools", default="ours,intel")
    parser.add_argument("--json", help="write the results here (after every run)")
    parser.add_argument("--max-windows", type=int, help="evaluate only this many windows (smoke tests)")
    args = parser.parse_args()
    rows = args.rows.split(",")
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {sorted(ROWS)}")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        from transformers import AutoTokenizer

        if args.gguf:
            smollm2 = materialize_smollm2(scratch / "cache", gguf_path=args.gguf)
        elif args.tokenizer and not any(ROWS[r][0] == "smollm2" for r in rows):
            smollm2 = Path(args.tokenizer)
        else:
            parser.error("the smollm2 rows need --gguf and --eval-text; the others --gguf or --tokenizer")

        tokenizer = AutoTokenizer.from_pretrained(smollm2)
        ids = windows_from_text(tokenizer, VALID_TEXT.read_text(), 128, 2048, seed=0).input_ids
        ids_path = scratch / "ids.pt"
        torch.save(ids, ids_path)
        print("| row | tool | quantize s | peak GiB | ppl |\n|---|---|---|---|---|", flush=True)
        for row in rows:
            model_name = ROWS[row][0]
            model_dir = (
                smollm2
                if model_name == "smollm2"
                else random_llama(model_name, smollm2, scratch / model_name)
            )
            for tool in args.tools.split(","):
                result = run_tool(tool, row, model_dir, ids_path, scratch)
                if "out" in result and model_name == "smollm2":
                    quantized = load_quantized(result["out"], dtype=torch.bfloat16, device="cuda")
                    result["ppl"] = perplexity_of_file(
                        quantized, tokenizer, args.eval_text, max_windows=args.max_windows, progress=False
                    ).ppl
                    del quantized
                shutil.rmtree(result.pop("out", scratch / "none"), ignore_errors=True)
                results.append(result)
                print(
                    f"| {row} | {tool} | {result.get('quantize_s', float('nan')):.1f} | "
                    f"{result.get('peak_gib', float('nan')):.2f} | {result.get('ppl', float('nan')):.3f} | "
                    f"{result.get('status', '')}",
                    flush=True,
                )
                if args.json:
                    Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
