"""Per-iteration cost of SignRound on one SmolLM2 block vs the eager floor (cpu-small shapes).

The floor is one unquantized block's fp32 forward + MSE + backward with weight gradients on
4 x 256 tokens (benchmark-protocol.md: 0.24 s here). Our iteration should cost <= 1.2x that.

    uv run python bench/profile_block.py [--iters 20] [--profile] [--classic] [--fp32]

``--classic`` tunes Intel's way (``enable_alg_ext=False``: min/max clipping factors); the default
tunes from the searched scale (autoround's default). Where the CPU has native bf16 our default
tunes under bf16 autocast (``amp``); the eager step is then also timed that way, and ``--fp32``
tunes in float32.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from autoround.algorithms import SignRoundSettings, tune_block
from autoround.calibration import windows_from_text
from autoround.data import default_calibration_text_path
from autoround.model_sources import load_model_and_tokenizer
from autoround.modeling import capture_block_inputs
from autoround.schemes import PRESETS


def eager_step(block, hidden, kwargs, target, amp: bool = False) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = block(hidden, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    F.mse_loss(out.float(), target).backward()


def eager_time(block, hidden, kwargs, target, amp: bool, reps: int = 5) -> float:
    """Seconds per eager step (after two warm-ups), fp32 or under bf16 autocast."""
    for _ in range(2):
        eager_step(block, hidden, kwargs, target, amp)
    start = time.perf_counter()
    for _ in range(reps):
        eager_step(block, hidden, kwargs, target, amp)
    return (time.perf_counter() - start) / reps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--block", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--classic", action="store_true", help="enable_alg_ext=False")
    parser.add_argument("--fp32", action="store_true", help="amp=False (no bf16 autocast)")
    parser.add_argument("--scheme", default="W4A16", help="a preset; float ones in weight-only form")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tok = load_model_and_tokenizer("smollm2", dtype=torch.float32)
    calib = windows_from_text(tok, default_calibration_text_path().read_text(), 4, 256, seed=0)
    captured = capture_block_inputs(model, model.model.layers[0], calib.input_ids, torch.device("cpu"), False)
    block = copy.deepcopy(model.model.layers[args.block])
    with torch.no_grad():
        target = block(captured.hidden, **captured.kwargs)
    target = target[0] if isinstance(target, tuple) else target
    for p in block.parameters():
        p.requires_grad_(True)
    eager = eager_time(block, captured.hidden, captured.kwargs, target, amp=False)
    alg_ext = not args.classic
    amp = SignRoundSettings(amp=not args.fp32).autocast_dtype("cpu") is not None
    eager_bf16 = eager_time(block, captured.hidden, captured.kwargs, target, amp=True) if amp else None
    scheme = PRESETS[args.scheme.upper()].replace(act_bits=16)
    layers = {n: scheme for n, m in block.named_modules() if isinstance(m, torch.nn.Linear)}
    settings = SignRoundSettings(iters=args.iters, batch_size=4, enable_alg_ext=alg_ext, amp=not args.fp32)
    warm_up = SignRoundSettings(iters=2, batch_size=4, enable_alg_ext=alg_ext, amp=not args.fp32)
    tune_block(block, captured.hidden, target, captured.kwargs, layers, warm_up)
    start = time.perf_counter()
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            tune_block(block, captured.hidden, target, captured.kwargs, layers, settings)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    else:
        tune_block(block, captured.hidden, target, captured.kwargs, layers, settings)
    ours = (time.perf_counter() - start) / args.iters
    print(
        f"eager fwd+mse+bwd: {eager * 1000:.1f} ms; SignRound iteration: {ours * 1000:.1f} ms "
        f"({ours / eager:.2f}x the eager floor)"
        + (
            f"; eager under bf16 autocast {eager_bf16 * 1000:.1f} ms ({ours / eager_bf16:.2f}x)"
            if eager_bf16
            else ""
        )
    )


if __name__ == "__main__":
    main()
