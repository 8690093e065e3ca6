"""Intel auto-round 0.16.1's ``auto_round``-format exports of the tiny dense Llama with its
weight-only float schemes (RTN), and Intel's own logits of each: the references of
tests/hf/test_intel_float_checkpoints.py.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    V=${AUTOROUND_INTEL_VENV:-$HOME/.cache/autoround-dev/intel-venv}
    $V/bin/python scripts/intel/make_float_exports.py [--out tests/fixtures/intel] [--only NAME ...]

Reads  OUT/tiny_llama_dense/ (scripts/intel/make_tiny_fixture.py)
Writes OUT/exports/<name>/ for each entry of FIXTURES: AutoRound(dense, **kwargs, iters=0,
       disable_opt_rtn=True, device_map="cpu", disable_model_free=True).quantize_and_save(
       format="auto_round"), keeping config.json, quantization_config.json and model.safetensors;
       plus reference.safetensors (``in_memory_logits`` of INPUT_IDS and NEW_TOKENS
       ``in_memory_greedy`` tokens of Intel's in-memory quantized model in float32, and
       ``loaded_*`` of Intel's loader reading the saved checkpoint where it can: see reference())
       and reference.json (the call, versions, and the layer class Intel's loader picked or its
       refusal; Intel 0.16.1 refuses all four).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
#: The fixed prompt (token ids of the tiny tokenizer) and how many greedy tokens to record.
INPUT_IDS = [1, 45, 99, 7, 200, 13, 64, 250, 31, 8]
NEW_TOKENS = 8
CALIBRATION = "The capital of France is Paris. The quick brown fox jumps over the lazy dog."

#: name -> AutoRound keywords (act_bits=16: weight-only; Intel's MX/NV presets quantize activations).
FIXTURES = {
    "ar_mxfp4_a16": {"scheme": "MXFP4", "act_bits": 16},
    "ar_mxfp8_a16": {"scheme": "MXFP8", "act_bits": 16},
    # NVFP4's preset act_data_type resets act_bits to 4 unless it is overridden too; Intel
    # calibrates NVFP4 even for RTN: a local text, no hub download
    "ar_nvfp4_a16": {
        "scheme": "NVFP4",
        "act_bits": 16,
        "act_data_type": "fp",
        "dataset": [CALIBRATION] * 2,
        "nsamples": 2,
        "seqlen": 8,
    },
    "ar_fpw8a16": {"scheme": "FPW8A16"},
    # FP8 in groups: Intel stores the (out, groups) scales flattened
    "ar_fp8_g32": {"scheme": "FPW8A16", "group_size": 32},
}
KEEP = ("config.json", "quantization_config.json", "model.safetensors")


def export(dense: str, out_dir: str, kwargs: dict) -> dict:
    """Quantize ``dense`` with RTN, keep the checkpoint's files in ``out_dir`` and save the
    in-memory quantized model's logits (its weights are Intel's quantize-dequantize values)."""
    import torch
    from auto_round import AutoRound

    call = dict(kwargs, iters=0, disable_opt_rtn=True, device_map="cpu", disable_model_free=True)
    ar = AutoRound(dense, **call)
    tmp = tempfile.mkdtemp(prefix="intel_fx_", dir=os.path.dirname(os.path.abspath(out_dir)))
    try:
        # inplace=False: the export packs a copy, ar.model keeps Intel's dequantized weights
        ar.quantize_and_save(tmp, format="auto_round", inplace=False)
        layer = ar.model.model.layers[0].self_attn.q_proj
        # the reference must be plain Linears holding Intel's qdq weights (unwrapped if wrapped)
        assert type(getattr(layer, "orig_layer", layer)) is torch.nn.Linear, type(layer)
        in_memory = _run(ar.model.float())
        folders = [r for r, _, fs in os.walk(tmp) if "config.json" in fs]
        assert len(folders) == 1, folders
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.makedirs(out_dir)
        for name in KEEP:
            if os.path.exists(os.path.join(folders[0], name)):
                shutil.copy(os.path.join(folders[0], name), os.path.join(out_dir, name))
                os.chmod(os.path.join(out_dir, name), 0o644)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"call": call, "format": "auto_round", "in_memory": in_memory}


def _run(model) -> dict:
    """Logits of INPUT_IDS and NEW_TOKENS greedy tokens, in float32."""
    import torch

    ids = torch.tensor([INPUT_IDS])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
        greedy = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, min_new_tokens=NEW_TOKENS)
    return {"logits": logits.contiguous(), "greedy": greedy[0, len(INPUT_IDS) :].contiguous()}


def reference(out_dir: str, in_memory: dict) -> dict:
    """Save Intel's logits and greedy tokens: of the in-memory quantized model (``in_memory_*``)
    and, where Intel's own loader takes the saved checkpoint, of that (``loaded_*``, float32, CPU).
    Intel 0.16.1 has no inference backend for MX / NV float weights without quantized
    activations: its loader refuses those checkpoints (recorded as ``intel_load_error``)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    tensors = {f"in_memory_{k}": v for k, v in in_memory.items()}
    record: dict = {}
    try:
        model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, device_map="cpu").eval()
        layer = model.model.layers[0].self_attn.q_proj
        record["intel_layer_class"] = f"{type(layer).__module__}.{type(layer).__name__}"
        loaded = _run(model)
    except Exception as err:  # the refusal (or a failing forward) is recorded, the in-memory reference stays
        record["intel_load_error"] = f"{type(err).__name__}: {err}"[:600]
    else:
        tensors.update({f"loaded_{k}": v for k, v in loaded.items()})
    save_file(tensors, os.path.join(out_dir, "reference.safetensors"))
    return record


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "fixtures", "intel"))
    ap.add_argument("--only", nargs="*", help="fixture names to (re)make; default all")
    args = ap.parse_args()

    import auto_round
    import torch
    import transformers

    out = os.path.abspath(args.out)
    dense = os.path.join(out, "tiny_llama_dense")
    for name, kwargs in FIXTURES.items():
        if args.only and name not in args.only:
            continue
        target = os.path.join(out, "exports", name)
        record = export(dense, target, kwargs)
        record.update(reference(target, record.pop("in_memory")))
        record.update(
            generator="scripts/intel/make_float_exports.py",
            auto_round=auto_round.__version__,
            torch=torch.__version__,
            transformers=transformers.__version__,
            input_ids=INPUT_IDS,
            new_tokens=NEW_TOKENS,
        )
        with open(os.path.join(target, "reference.json"), "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(target) for f in fs)
        print(
            f"wrote {target} ({size} bytes): {record.get('intel_layer_class') or record['intel_load_error']}"
        )


if __name__ == "__main__":
    main()
