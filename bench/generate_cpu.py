"""End-to-end CPU benchmark: SmolLM2 greedy decode and prefill, dense vs our quantized checkpoints.

    python bench/generate_cpu.py --ckpt W4A16g128=DIR --ckpt W4A16g64=DIR --ckpt W2A16G64=DIR
        [--model DIR] [--threads 2] [--rounds 3] [--new-tokens 128] [--prompt-tokens 512]

Every row is loaded once and measured in turn, round after round (side by side on a shared machine),
and the median round is reported: greedy ``generate()`` of ``--new-tokens`` tokens from a short
prompt (decode tokens/s excludes the first token), and the time to first token of a
``--prompt-tokens`` prompt (prefill). Dense rows: the original model in fp32 and bf16. Quantized rows
load through ``autoround_hf`` with the ``cpu`` backend, in bf16 (the int4 op) and, for the first
checkpoint, in fp32 too (fp32 activations take the exact fp32 path). A per-module time breakdown
of one decode (quantized linears, lm_head, attention core, the rest) follows the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from autoround.data import __file__ as data_init
from autoround.model_sources import materialize_smollm2
from autoround.nn import QuantLinear
from autoround_hf import AutoRoundConfig

#: The clock every timing reads; ``--clock cpu`` (one thread) swaps in this thread's CPU time.
CLOCK = time.perf_counter

SHORT_PROMPT = "The history of the city of Paris"


def load_rows(model: Path, ckpts: dict[str, Path]) -> dict[str, torch.nn.Module]:
    """Row name -> model, every one in eval mode."""
    rows = {
        "dense fp32": AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
        "dense bf16": AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16),
    }
    for i, (name, path) in enumerate(ckpts.items()):
        for dtype in (torch.bfloat16, torch.float32) if i == 0 else (torch.bfloat16,):
            tag = "bf16" if dtype == torch.bfloat16 else "fp32"
            rows[f"{name} cpu {tag}"] = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, quantization_config=AutoRoundConfig(backend="cpu")
            )
    return {k: v.eval() for k, v in rows.items()}


def long_prompt(tok, n: int) -> torch.Tensor:
    """The first ``n`` tokens of the shipped wikitext-2 validation text."""
    text = (Path(data_init).parent / "wikitext2_valid.txt").read_text()
    return tok(text[: 20 * n], return_tensors="pt").input_ids[:, :n]


def decode_and_prefill(model, short: torch.Tensor, long: torch.Tensor, new: int) -> tuple[float, float]:
    """(decode tokens/s, prefill seconds of the long prompt)."""
    kw = dict(do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        start = CLOCK()
        model.generate(short, max_new_tokens=1, min_new_tokens=1, **kw)
        first = CLOCK() - start
        start = CLOCK()
        out = model.generate(short, max_new_tokens=new, min_new_tokens=new, **kw)
        total = CLOCK() - start
        assert out.shape[1] - short.shape[1] == new
        start = CLOCK()
        model.generate(long, max_new_tokens=1, min_new_tokens=1, **kw)
        prefill = CLOCK() - start
    return (new - 1) / max(total - first, 1e-9), prefill


def breakdown(model, short: torch.Tensor, new: int) -> dict[str, float]:
    """Seconds per decoded token by part: quantized/dense linears in blocks, lm_head, attention core, rest."""
    spent: dict[str, float] = defaultdict(float)
    starts: dict[int, float] = {}
    hooks = []

    def part_of(name: str, module) -> str | None:
        if name == "lm_head":
            return "lm_head"
        if isinstance(module, (QuantLinear, torch.nn.Linear)) and ".layers." in name:
            return "block linears" + (" (attn)" if "self_attn" in name else "")
        if name.endswith("self_attn"):
            return "self_attn total"
        return None

    for name, module in model.named_modules():
        part = part_of(name, module)
        if part is None:
            continue
        hooks.append(module.register_forward_pre_hook(lambda m, a: starts.__setitem__(id(m), CLOCK())))
        hooks.append(
            module.register_forward_hook(
                lambda m, a, o, part=part: spent.__setitem__(part, spent[part] + CLOCK() - starts[id(m)])
            )
        )
    kw = dict(do_sample=False, pad_token_id=0, max_new_tokens=new, min_new_tokens=new)
    with torch.inference_mode():
        start = CLOCK()
        model.generate(short, **kw)
        total = CLOCK() - start
    for h in hooks:
        h.remove()
    linears = spent["block linears"] + spent["block linears (attn)"]
    parts = {
        "block linears (q,k,v,o,gate,up,down)": linears,
        "lm_head (49152x576, unquantized)": spent["lm_head"],
        "attention core (rope, cache, sdpa)": spent["self_attn total"] - spent["block linears (attn)"],
    }
    parts["rest (norms, act, embedding, generate loop, argmax)"] = total - sum(parts.values())
    return {k: v / new for k, v in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="dense SmolLM2 dir (default: the demo cache)"
    )
    parser.add_argument("--ckpt", action="append", default=[], help="NAME=DIR of an auto_round checkpoint")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: this thread's CPU time (with --threads 1; robust to other jobs on a shared machine)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if args.threads != 1:
            parser.error("--clock cpu needs --threads 1 (other threads' time is not counted)")
        global CLOCK
        CLOCK = time.thread_time
    model_dir = args.model or materialize_smollm2()
    ckpts = {k: Path(v) for k, v in (c.split("=", 1) for c in args.ckpt)}
    tok = AutoTokenizer.from_pretrained(model_dir)
    short = tok(SHORT_PROMPT, return_tensors="pt").input_ids
    long = long_prompt(tok, args.prompt_tokens)
    rows = load_rows(model_dir, ckpts)
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.clock} clock, CPU {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"load average before: {os.getloadavg()}")
    results: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in range(args.rounds + 1):  # the first round warms up (repacking, allocator) and is dropped
        for name, model in rows.items():
            results[name].append(decode_and_prefill(model, short, long, args.new_tokens))
            tps, prefill = results[name][-1]
            print(f"round {r} {name}: {tps:.1f} tok/s, prefill {prefill:.3f} s", file=sys.stderr, flush=True)
    print(f"load average after: {os.getloadavg()}\n")
    report(results, args)
    for name in ("dense bf16", next(n for n in rows if n.endswith("cpu bf16"))):
        print(f"\nper decoded token, {name} ({args.new_tokens} tokens, forward hooks):")
        for part, sec in breakdown(rows[name], short, args.new_tokens).items():
            print(f"  {part}: {sec * 1e3:.2f} ms")


def report(results: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    med = {
        k: (statistics.median(t for t, _ in v[1:]), statistics.median(p for _, p in v[1:]))
        for k, v in results.items()
    }
    best_dense = max(med["dense fp32"][0], med["dense bf16"][0])
    fp32_prefill = med["dense fp32"][1]
    print(
        f"median of {args.rounds} rounds; decode: {args.new_tokens} greedy tokens; prefill: {args.prompt_tokens} tokens"
    )
    print("| row | decode tok/s | vs faster dense | prefill s | fp32 dense prefill / this |")
    print("|---|---|---|---|---|")
    for name, (tps, prefill) in med.items():
        print(
            f"| {name} | {tps:.1f} | {tps / best_dense:.2f}x | {prefill:.3f} | {fp32_prefill / prefill:.2f}x |"
        )


if __name__ == "__main__":
    main()
