"""Float-scheme worker for llm-compressor 0.14 ``QuantizationModifier`` (round to nearest with its
observers; runs in a venv with llm-compressor, never imports autoround). See bench/float_cpu.py.

The job names a compressed-tensors preset (``NVFP4A16``, ``MXFP4A16``, ``MXFP8A16``) or gives
``config_groups`` (FP8 weight-only per tensor has no preset). Timed: the ``oneshot`` call, with the
same calibration rows as the other tools (weight-only schemes use them for nothing but the forward
pass llm-compressor runs). Afterwards every quantized Linear's weight is fake-quantized with
compressed-tensors' own ``fake_quantize`` (global scale included) and saved as fp32.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker_common import load_fp32, peak_rss_mb, run_worker, timed, versions


def fake_quantized_state(model) -> dict:
    """name.weight -> fp32 fake-quantized weight of every quantized Linear."""
    import torch
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    state = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            scheme = getattr(module, "quantization_scheme", None)
            if not isinstance(module, torch.nn.Linear) or scheme is None or scheme.weights is None:
                continue
            w = fake_quantize(
                module.weight,
                module.weight_scale,
                getattr(module, "weight_zero_point", None),
                scheme.weights,
                global_scale=getattr(module, "weight_global_scale", None),
            )
            state[f"{name}.weight"] = w.detach().to(torch.float32).contiguous()
    return state


def body(job: dict) -> dict:
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from safetensors.torch import save_file

    model, tok = load_fp32(job["model_dir"])
    ids = torch.load(job["ids_path"])
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    rss_loaded = peak_rss_mb()
    spec = job["llmc"]
    if "preset" in spec:
        recipe = QuantizationModifier(targets="Linear", scheme=spec["preset"], ignore=["lm_head"])
    else:
        recipe = QuantizationModifier(config_groups=spec["config_groups"], ignore=["lm_head"])
    _, seconds, rss = timed(
        lambda: oneshot(
            model=model,
            dataset=ds,
            recipe=recipe,
            processor=tok,
            max_seq_length=ids.shape[1],
            num_calibration_samples=ids.shape[0],
            shuffle_calibration_samples=False,
        )
    )
    state = fake_quantized_state(model)
    os.makedirs(job["out_dir"], exist_ok=True)
    path = os.path.join(job["out_dir"], "qdq.safetensors")
    save_file(state, path)
    return {
        "status": "ok",
        "time_s": seconds,
        "peak_rss_mb": rss,
        "rss_after_load_mb": rss_loaded,
        "checkpoint": path,
        "checkpoint_kind": "qdq_state_dict",
        "quantized_linears": len(state),
        "call": {"recipe": repr(recipe)[:400]},
        "versions": versions("torch", "transformers", "llmcompressor", "compressed-tensors"),
    }


if __name__ == "__main__":
    run_worker(body)
