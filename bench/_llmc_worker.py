"""cpu-small worker for llm-compressor 0.14.0.1 ``GPTQModifier`` (runs ONLY in its own venv).

llm-compressor receives the calibration ids as a tokenized ``datasets.Dataset`` with columns
``input_ids`` / ``attention_mask`` (all ones), ``processor=tokenizer``, no shuffling. Timed: the
``oneshot`` call. Afterwards every quantized Linear's weight is fake-quantized (quantize-dequantize
with its ``weight_scale`` / ``weight_zero_point``, compressed-tensors' own ``fake_quantize``) and
saved as a plain fp32 state dict of those weights (``qdq.safetensors``) for our evaluator.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker_common import load_fp32, peak_rss_mb, run_worker, timed, versions


def body(job: dict) -> dict:
    import torch
    from datasets import Dataset
    from safetensors.torch import save_file

    try:
        from llmcompressor.modifiers.gptq import GPTQModifier
    except ImportError:
        from llmcompressor.modifiers.quantization import GPTQModifier
    from llmcompressor import oneshot

    model, tok = load_fp32(job["model_dir"])
    ids = torch.load(job["ids_path"])
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    rss_loaded = peak_rss_mb()
    bits, group = job["bits"], job.get("group") or job["group_size"]
    recipe = GPTQModifier(
        ignore=["lm_head"],
        config_groups={
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": bits,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "group",
                    "group_size": group,
                },
            }
        },
    )
    call = dict(
        dataset=f"Dataset {ids.shape[0]} rows x {ids.shape[1]}",
        recipe=repr(recipe)[:400],
        processor="tokenizer",
        max_seq_length=ids.shape[1],
        num_calibration_samples=ids.shape[0],
        shuffle_calibration_samples=False,
    )
    try:
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
    except ValueError as exc:
        if "group_size" in str(exc) or "divisib" in str(exc):
            return {"status": "refused", "message": str(exc)[:600], "call": call}
        raise
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    state, n_q = {}, 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or name.endswith("lm_head"):
                continue
            scheme = getattr(module, "quantization_scheme", None)
            if scheme is None or scheme.weights is None or not hasattr(module, "weight_scale"):
                continue
            zp = getattr(module, "weight_zero_point", None)
            w = fake_quantize(module.weight, module.weight_scale, zp, scheme.weights)
            state[f"{name}.weight"] = w.detach().to(torch.float32).contiguous()
            n_q += 1
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
        "quantized_linears": n_q,
        "call": call,
        "versions": versions("torch", "transformers", "llmcompressor", "compressed-tensors"),
    }


if __name__ == "__main__":
    run_worker(body)
