"""cpu-small worker: llm-compressor ``oneshot`` with OUR ``SignRoundModifier`` (workspace venv).

The same inputs as bench/_llmc_worker.py (llm-compressor's GPTQModifier): the calibration ids as a
tokenized ``datasets.Dataset``, ``processor=tokenizer``, no shuffling, the same ``config_groups``
(int, symmetric, group strategy). Timed: the ``oneshot`` call. Afterwards every quantized Linear's
weight is fake-quantized with compressed-tensors' own ``fake_quantize`` and saved as a plain fp32
state dict (``qdq.safetensors``) for the evaluator, exactly as the GPTQ worker does; then the model
is saved with ``save_compressed=True`` (the pack-quantized checkpoint; its size is reported).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _worker_common import load_fp32, peak_rss_mb, run_worker, timed, versions


def body(job: dict) -> dict:
    import torch
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from datasets import Dataset
    from llmcompressor import oneshot
    from safetensors.torch import save_file

    from autoround_llmc import SignRoundModifier

    model, tok = load_fp32(job["model_dir"])
    ids = torch.load(job["ids_path"])
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    rss_loaded = peak_rss_mb()
    modifier = SignRoundModifier(
        ignore=["lm_head"],
        config_groups={
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": job["bits"],
                    "type": "int",
                    "symmetric": True,
                    "strategy": "group",
                    "group_size": job["group"],
                },
            }
        },
        iters=job["iters"],
        batch_size=job["batch_size"],
    )
    _, seconds, rss = timed(
        lambda: oneshot(
            model=model,
            dataset=ds,
            recipe=[modifier],
            processor=tok,
            max_seq_length=ids.shape[1],
            num_calibration_samples=ids.shape[0],
            shuffle_calibration_samples=False,
        )
    )
    state = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            scheme = getattr(module, "quantization_scheme", None)
            if scheme is None or scheme.weights is None or not hasattr(module, "weight_scale"):
                continue
            zp = getattr(module, "weight_zero_point", None)
            w = fake_quantize(module.weight, module.weight_scale, zp, scheme.weights)
            state[f"{name}.weight"] = w.detach().to(torch.float32).contiguous()
    os.makedirs(job["out_dir"], exist_ok=True)
    path = os.path.join(job["out_dir"], "qdq.safetensors")
    save_file(state, path)
    ckpt = os.path.join(job["out_dir"], "pack-quantized")
    model.save_pretrained(ckpt, save_compressed=True)
    size = sum(os.path.getsize(os.path.join(ckpt, f)) for f in os.listdir(ckpt) if f.endswith(".safetensors"))
    reports = modifier.block_reports
    return {
        "status": "ok",
        "time_s": seconds,
        "peak_rss_mb": rss,
        "rss_after_load_mb": rss_loaded,
        "checkpoint": path,
        "checkpoint_kind": "qdq_state_dict",
        "compressed_checkpoint": ckpt,
        "compressed_safetensors_mb": size / 2**20,
        "quantized_linears": len(state),
        "blocks_beating_rtn": sum(r.tuned_loss < r.rtn_loss for r in reports),
        "blocks": len(reports),
        "block_reports": [r.__dict__ for r in reports],
        "call": {"recipe": repr(modifier)[:600], "dataset": f"Dataset {tuple(ids.shape)}"},
        "versions": versions(
            "torch", "transformers", "llmcompressor", "compressed-tensors", "autoround-core"
        ),
    }


if __name__ == "__main__":
    run_worker(body)
