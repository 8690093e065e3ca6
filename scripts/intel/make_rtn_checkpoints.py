"""Write Intel auto-round 0.16.1 RTN checkpoints (format ``auto_round``) for reference tests.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    V=${AUTOROUND_INTEL_VENV:-$HOME/.cache/autoround-dev/intel-venv}
    $V/bin/python scripts/intel/make_rtn_checkpoints.py --model DIR --out OUT \
        [--configs w4a16_g128,w4a16_g64,w2a16_g64] [--amp auto|off] \
        [--layer-config JSON] [--suffix NAME]

For each config it calls

    AutoRound(DIR, scheme=..., [group_size=64,] iters=0, disable_opt_rtn=True,
              device_map="cpu", [amp=False,] [layer_config=...])
        .quantize_and_save(tmp, format="auto_round")

and moves the folder Intel writes (a subfolder named after model + scheme) to
``OUT/<config>[<suffix>]``.  ``OUT/<config>/../manifest.json`` records versions, the call, and the
dtype Intel quantized in (``amp``): on a CPU whose CPUID reports AVX512_BF16, and on CUDA,
Intel keeps ``amp=True`` and quantizes the bf16 model in bf16; on a CPU without it, Intel
turns amp off and casts the model to float32 first (config then has ``"amp": false``).
``--amp off`` forces the float32 path anywhere.

Configs:
  w4a16_g128  scheme="W4A16"                  (bits 4, group 128, sym)
  w4a16_g64   scheme="W4A16", group_size=64
  w2a16_g64   scheme="W2A16G64"               (bits 2, group 64, sym)
  (extra, only with --configs: w3a16_g128 scheme="W3A16", w8a16_g128 scheme="W8A16")
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

CONFIGS = {
    "w4a16_g128": {"scheme": "W4A16"},
    "w4a16_g64": {"scheme": "W4A16", "group_size": 64},
    "w2a16_g64": {"scheme": "W2A16G64"},
    # not in the default set (pass --configs):
    "w3a16_g128": {"scheme": "W3A16"},
    "w8a16_g128": {"scheme": "W8A16"},
}
DEFAULT_CONFIGS = "w4a16_g128,w4a16_g64,w2a16_g64"


def run_one(
    model_dir: str, out_dir: str, kwargs: dict, layer_config: dict | None, amp_off: bool, flow: str
) -> dict:
    import torch
    from auto_round import AutoRound

    call = dict(kwargs, iters=0, disable_opt_rtn=True, device_map="cpu")
    if flow == "regular":
        call["disable_model_free"] = True
    if amp_off:
        call["amp"] = False
    if layer_config:
        call["layer_config"] = layer_config
    ar = AutoRound(model_dir, **call)
    compressor = type(ar).__name__
    if flow == "regular":
        amp_dtype = str(ar.model_context.amp_dtype)
        amp = bool(ar.model_context.amp)
    else:  # ModelFreeCompressor reads the safetensors itself, no model context
        amp_dtype, amp = "n/a (model-free: each weight is cast to float32)", None
    tmp = tempfile.mkdtemp(prefix="intel_rtn_", dir=os.path.dirname(os.path.abspath(out_dir)))
    try:
        _, folders = ar.quantize_and_save(tmp, format="auto_round")
        folder = folders[0] if isinstance(folders, (list, tuple)) else folders
        if not os.path.isfile(os.path.join(folder, "config.json")):
            cands = [r for r, _, fs in os.walk(tmp) if "config.json" in fs]
            assert len(cands) == 1, cands
            folder = cands[0]
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        shutil.move(folder, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    del ar
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {
        "call": {k: (v if isinstance(v, (int, float, str, bool, dict)) else str(v)) for k, v in call.items()},
        "format": "auto_round",
        "intel_subfolder": os.path.basename(folder.rstrip("/")),
        "compressor": compressor,
        "flow": flow,
        "amp": amp,
        "amp_dtype": amp_dtype,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF bf16 checkpoint dir")
    ap.add_argument("--out", required=True)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma list of {sorted(CONFIGS)}")
    ap.add_argument("--amp", choices=["auto", "off"], default="auto", help="regular flow only")
    ap.add_argument(
        "--flow",
        choices=["regular", "model_free"],
        default="regular",
        help="regular: disable_model_free=True (model loaded, blockwise RTN, QuantLinear packing); "
        "model_free: Intel's default auto-route for a path + iters=0 + disable_opt_rtn=True",
    )
    ap.add_argument("--layer-config", default=None, help="JSON dict passed as AutoRound(layer_config=...)")
    ap.add_argument("--suffix", default="", help="appended to each output folder name")
    args = ap.parse_args()

    import auto_round
    import torch
    import transformers

    if not os.path.isfile(os.path.join(args.model, "config.json")):
        sys.exit(f"no config.json in {args.model}")
    layer_config = json.loads(args.layer_config) if args.layer_config else None
    os.makedirs(args.out, exist_ok=True)
    man_path = os.path.join(args.out, "manifest.json")
    manifest = {}
    if os.path.exists(man_path):
        with open(man_path) as f:
            manifest = json.load(f)
    manifest.update(
        {
            "generator": "scripts/intel/make_rtn_checkpoints.py",
            "model": os.path.abspath(args.model),
            "auto_round": auto_round.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }
    )
    manifest.setdefault("checkpoints", {})
    for name in args.configs.split(","):
        name = name.strip()
        out_dir = os.path.join(args.out, name + args.suffix)
        info = run_one(args.model, out_dir, CONFIGS[name], layer_config, args.amp == "off", args.flow)
        manifest["checkpoints"][name + args.suffix] = info
        print(
            f"{name}{args.suffix}: {out_dir} ({info['compressor']}, amp={info['amp']}, {info['amp_dtype']})",
            flush=True,
        )
        with open(man_path, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
