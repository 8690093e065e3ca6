"""Intel auto-round 0.16.1's exports of the tiny dense Llama with calibrated activations: FP8_STATIC
(static per-tensor FP8 activations, ``input_scale``) and NVFP4 W4A4 (activations with a calibrated
global scale, ``input_global_scale``), RTN, in the ``auto_round`` and ``llm_compressor`` formats;
with each layer's calibrated ``act_max`` and Intel's own logits: the references of
tests/core/formats/test_static_act_exports.py and tests/hf/test_static_act_checkpoints.py.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    V=${AUTOROUND_INTEL_VENV:-$HOME/.cache/autoround-dev/intel-venv}
    $V/bin/python scripts/intel/make_static_act_exports.py [--out tests/fixtures/intel] [--only NAME ...]

Reads  OUT/tiny_llama_dense/ (scripts/intel/make_tiny_fixture.py)
Writes OUT/exports/<name>/ for each entry of FIXTURES: AutoRound(dense, **kwargs, iters=0,
       disable_opt_rtn=True, device_map="cpu", disable_model_free=True, dataset=a local text)
       .quantize_and_save(format=...), keeping config.json, quantization_config.json (if any) and
       model.safetensors; plus reference.safetensors: ``act_max.<layer>`` (the calibrated largest
       |input| Intel's in-memory layer holds after quantizing, float32), ``in_memory_logits`` of
       INPUT_IDS and NEW_TOKENS ``in_memory_greedy`` tokens of Intel's in-memory quantized model
       (its activations quantized as its ``WrapperWALayer`` does), and ``loaded_*`` of Intel's own
       loader reading the checkpoint where it can; reference.json records the call and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
INPUT_IDS = [1, 45, 99, 7, 200, 13, 64, 250, 31, 8]
NEW_TOKENS = 8
CALIBRATION = "The capital of France is Paris. The quick brown fox jumps over the lazy dog."
#: Intel calibrates static activations even for RTN: a local text, no hub download.
DATA = {"dataset": [CALIBRATION] * 2, "nsamples": 2, "seqlen": 8}

#: name -> (format, AutoRound keywords).
FIXTURES = {
    "ar_fp8_static": ("auto_round", {"scheme": "FP8_STATIC", **DATA}),
    "ar_nvfp4_w4a4": ("auto_round", {"scheme": "NVFP4", **DATA}),
    "llmc_fp8_static": ("llm_compressor", {"scheme": "FP8_STATIC", **DATA}),
    "llmc_nvfp4_w4a4": ("llm_compressor", {"scheme": "NVFP4", **DATA}),
}
KEEP = ("config.json", "quantization_config.json", "model.safetensors")


def _act_max(model) -> dict:
    """``act_max.<layer>`` of every Linear that holds one (unwrapped where Intel wrapped it)."""
    import torch

    found = {}
    for name, module in model.named_modules():
        layer = getattr(module, "orig_layer", module)
        value = getattr(layer, "act_max", None)
        if isinstance(value, torch.Tensor) and not name.endswith(".orig_layer"):
            found[f"act_max.{name}"] = value.detach().float().reshape(-1).clone().contiguous()
    return found


def export(dense: str, out_dir: str, fmt: str, kwargs: dict) -> tuple[dict, dict]:
    """Quantize ``dense`` with RTN, keep the checkpoint's files in ``out_dir``; returns the record
    and the reference tensors of the in-memory model."""
    from auto_round import AutoRound

    call = dict(kwargs, iters=0, disable_opt_rtn=True, device_map="cpu", disable_model_free=True)
    ar = AutoRound(dense, **call)
    tmp = tempfile.mkdtemp(prefix="intel_fx_", dir=os.path.dirname(os.path.abspath(out_dir)))
    try:
        # inplace=False: the export packs a copy, ar.model keeps Intel's quantized layers
        ar.quantize_and_save(tmp, format=fmt, inplace=False)
        # calibrated activations leave each layer's act_max; dynamic ones none (kept if any)
        tensors = _act_max(ar.model)
        run = _run(ar.model.float())
        tensors.update({f"in_memory_{k}": v for k, v in run.items()})
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
    return {
        "call": call,
        "format": fmt,
        "layer_class": type(ar.model.model.layers[0].self_attn.q_proj).__name__,
    }, tensors


def _run(model) -> dict:
    """Logits of INPUT_IDS and NEW_TOKENS greedy tokens, in float32."""
    import torch

    ids = torch.tensor([INPUT_IDS])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
        greedy = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, min_new_tokens=NEW_TOKENS)
    return {"logits": logits.contiguous(), "greedy": greedy[0, len(INPUT_IDS) :].contiguous()}


def loaded(out_dir: str, tensors: dict) -> dict:
    """Intel's loader on the saved checkpoint (auto_round format only): its logits, or its refusal."""
    import torch
    from transformers import AutoModelForCausalLM

    record: dict = {}
    try:
        model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, device_map="cpu").eval()
        layer = model.model.layers[0].self_attn.q_proj
        record["intel_layer_class"] = f"{type(layer).__module__}.{type(layer).__name__}"
        tensors.update({f"loaded_{k}": v for k, v in _run(model).items()})
    except Exception as err:  # the refusal (or a failing forward) is recorded
        record["intel_load_error"] = f"{type(err).__name__}: {err}"[:600]
    return record


def main(fixtures: dict | None = None, generator: str = "scripts/intel/make_static_act_exports.py") -> None:
    """Make ``fixtures`` (name -> (format, AutoRound keywords); default :data:`FIXTURES`), each
    recorded as made by ``generator``; a scheme Intel's export refuses is recorded as refused."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "fixtures", "intel"))
    ap.add_argument("--only", nargs="*", help="fixture names to (re)make; default all")
    args = ap.parse_args()

    import auto_round
    import torch
    import transformers
    from safetensors.torch import save_file

    out = os.path.abspath(args.out)
    dense = os.path.join(out, "tiny_llama_dense")
    for name, (fmt, kwargs) in (fixtures or FIXTURES).items():
        if args.only and name not in args.only:
            continue
        target = os.path.join(out, "exports", name)
        try:
            record, tensors = export(dense, target, fmt, kwargs)
        except ValueError as err:  # Intel's export refuses the scheme: recorded
            os.makedirs(target, exist_ok=True)
            refusal = {"call": kwargs, "format": fmt, "intel_export_error": str(err)[:600]}
            with open(os.path.join(target, "reference.json"), "w") as f:
                json.dump(dict(refusal, auto_round=auto_round.__version__), f, indent=1, sort_keys=True)
            print(f"refused {name}: {err}")
            continue
        if fmt == "auto_round":
            record.update(loaded(target, tensors))
        save_file(tensors, os.path.join(target, "reference.safetensors"))
        record.update(
            generator=generator,
            auto_round=auto_round.__version__,
            torch=torch.__version__,
            transformers=transformers.__version__,
            input_ids=INPUT_IDS,
            new_tokens=NEW_TOKENS,
        )
        with open(os.path.join(target, "reference.json"), "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(target) for f in fs)
        loader = record.get("intel_layer_class") or record.get("intel_load_error")
        print(f"wrote {target} ({size} bytes): {loader}")


if __name__ == "__main__":
    main()
