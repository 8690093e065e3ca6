"""Intel auto-round 0.16.1's exports of the tiny dense Llama in the formats autoround writes besides
``auto_round`` (RTN, W4 g32): the references of tests/core/formats/test_exports_match_intel.py.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh; ``llm_compressor`` needs its
compressed-tensors); our packages never import ``auto_round``.

    V=${AUTOROUND_INTEL_VENV:-$HOME/.cache/autoround-dev/intel-venv}
    $V/bin/python scripts/intel/make_export_fixtures.py [--out tests/fixtures/intel]

Reads  OUT/tiny_llama_dense/ (scripts/intel/make_tiny_fixture.py)
Writes OUT/exports/<name>/ for each entry of FIXTURES: AutoRound(dense, **kwargs, iters=0,
       disable_opt_rtn=True, device_map="cpu", disable_model_free=True).quantize_and_save(
       format=<format>), keeping the checkpoint's config.json, quantization_config.json and
       model.safetensors; OUT/exports/manifest.json (versions and the calls).
(``tiny_llama_gptq_w4_g32`` and ``tiny_llama_awq_w4_g32`` come from make_gptq_awq_fixtures.py.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MIXED = {"model.layers.0.mlp.down_proj": {"bits": 8}, "model.layers.1.self_attn.o_proj": {"bits": 16}}
SKIP = {"model.layers.1.self_attn.o_proj": {"bits": 16}}
W4G32 = {"scheme": "W4A16", "group_size": 32}

#: name -> (Intel format, AutoRound keywords).
FIXTURES = {
    "ar_gptq_w4_g32_asym": ("auto_round:auto_gptq", {**W4G32, "sym": False}),
    "ar_awq_w4_g32_asym": ("auto_round:auto_awq", {**W4G32, "sym": False}),
    "ar_awq_w4_g32_sym": ("auto_round:auto_awq", W4G32),
    "gptq_w4_g32_mixed": ("auto_gptq", {**W4G32, "layer_config": MIXED}),
    "gptq_w2_g32_asym": ("auto_gptq", {"scheme": "W2A16", "group_size": 32, "sym": False}),
    "awq_w4_g32_sym_skip": ("auto_awq", {**W4G32, "layer_config": SKIP}),
    "llmc_w4_g32": ("llm_compressor", W4G32),
    "llmc_w4_g32_asym": ("llm_compressor", {**W4G32, "sym": False}),
    "llmc_w8_g32_mixed": ("llm_compressor", {"scheme": "W8A16", "group_size": 32, "layer_config": SKIP}),
}
KEEP = ("config.json", "quantization_config.json", "model.safetensors")


def export(dense: str, out_dir: str, fmt: str, kwargs: dict) -> dict:
    from auto_round import AutoRound

    call = dict(kwargs, iters=0, disable_opt_rtn=True, device_map="cpu", disable_model_free=True)
    ar = AutoRound(dense, **call)
    tmp = tempfile.mkdtemp(prefix="intel_fx_", dir=os.path.dirname(os.path.abspath(out_dir)))
    try:
        ar.quantize_and_save(tmp, format=fmt)
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
    return {"call": call, "format": fmt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "fixtures", "intel"))
    ap.add_argument("--only", nargs="*", help="fixture names to (re)make; default all")
    args = ap.parse_args()

    import auto_round
    import compressed_tensors
    import torch
    import transformers

    out = os.path.abspath(args.out)
    dense = os.path.join(out, "tiny_llama_dense")
    root = os.path.join(out, "exports")
    os.makedirs(root, exist_ok=True)
    manifest_path = os.path.join(root, "manifest.json")
    manifest = {}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    manifest.update(
        generator="scripts/intel/make_export_fixtures.py",
        auto_round=auto_round.__version__,
        compressed_tensors=compressed_tensors.__version__,
        torch=torch.__version__,
        transformers=transformers.__version__,
        dense="tiny_llama_dense",
    )
    for name, (fmt, kwargs) in FIXTURES.items():
        if args.only and name not in args.only:
            continue
        target = os.path.join(root, name)
        manifest[name] = export(dense, target, fmt, kwargs)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(target) for f in fs)
        print(f"wrote {target} ({size} bytes)")
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
