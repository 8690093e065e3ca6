"""One SignRound iteration on the GPU vs the eager floor, per model shape (issue 25).

The floor (benchmark-protocol.md): one unquantized bf16 block's forward + MSE + backward with
weight gradients on 8 x 2048 tokens. Our iteration: ``tune_block`` of the same block (W4A16,
Intel's default recipe, our default ``enable_alg_ext``), timed as the difference between 20 and
120 iterations so setup cost cancels; with the CUDA graph replay and without it
(``AUTOROUND_CUDA_GRAPHS=0``). Also the peak memory of a 120-iteration tune beyond its inputs.

    PYTHONPATH=packages/autoround-core/src python3 bench/signround_gpu_step.py [--profile]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig

from autoround.algorithms import SignRoundSettings, tune_block
from autoround.modeling import capture_block_inputs
from autoround.schemes import PRESETS

SHAPES = {
    "SmolLM2-135M": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=1, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152),
    "Llama-1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=1, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=49152),
    "Llama-8B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=1, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=49152),
}  # fmt: skip


def _timed(fn, reps: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def one_shape(name: str, nsamples: int, profile: bool) -> dict:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPES[name]), dtype=torch.bfloat16).cuda().eval()
    ids = torch.randint(0, 49152, (nsamples, 2048))
    captured = capture_block_inputs(model, model.model.layers[0], ids, torch.device("cuda"), False)
    block = model.model.layers[0]
    with torch.no_grad():
        target = block(captured.hidden, **captured.kwargs)
        target = target[0] if isinstance(target, tuple) else target
    floor_block = copy.deepcopy(block).requires_grad_(True)

    def eager_step() -> None:
        out = floor_block(captured.hidden[:8], **captured.kwargs)
        out = out[0] if isinstance(out, tuple) else out
        F.mse_loss(out.float(), target[:8].float()).backward()

    eager_step()
    floor = _timed(eager_step, 10)
    work = copy.deepcopy(block).float()
    layers = {n: PRESETS["W4A16"] for n, m in work.named_modules() if isinstance(m, torch.nn.Linear)}
    kwargs = {
        k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
        for k, v in captured.kwargs.items()
    }
    if "position_embeddings" in kwargs:
        kwargs["position_embeddings"] = tuple(t.float() for t in kwargs["position_embeddings"])
    row = {"shape": name, "floor_ms": floor * 1e3}
    for graphs in ("1", "0"):
        os.environ["AUTOROUND_CUDA_GRAPHS"] = graphs

        def tune(iters: int) -> None:
            tune_block(
                work, captured.hidden, target, kwargs, layers, SignRoundSettings(iters=iters, batch_size=8)
            )

        tune(5)
        short = _timed(lambda: tune(20), 1)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        long = _timed(lambda: tune(120), 1)
        per_iter = (long - short) / 100
        key = "graph" if graphs == "1" else "eager"
        row[f"{key}_ms"] = per_iter * 1e3
        row[f"{key}_x_floor"] = per_iter / floor
        row[f"{key}_peak_gib"] = (torch.cuda.max_memory_allocated() - base) / 2**30
        if profile and graphs == "0":
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                tune(10)
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20))
    os.environ.pop("AUTOROUND_CUDA_GRAPHS", None)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="SmolLM2-135M,Llama-1B")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--profile", action="store_true", help="a torch.profiler table of the eager loop")
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(
        "| shape | eager floor ms | graph ms (x floor) | eager ms (x floor) | tune peak GiB graph / eager |"
    )
    print("|---|---|---|---|---|")
    for name in args.shapes.split(","):
        r = one_shape(name, args.nsamples, args.profile)
        print(
            f"| {name} | {r['floor_ms']:.2f} | {r['graph_ms']:.2f} ({r['graph_x_floor']:.2f}x) | "
            f"{r['eager_ms']:.2f} ({r['eager_x_floor']:.2f}x) | {r['graph_peak_gib']:.2f} / {r['eager_peak_gib']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
