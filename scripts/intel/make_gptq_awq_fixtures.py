"""GPTQ- and AWQ-format fixtures of the tiny dense Llama, exported by Intel auto-round (RTN W4 g32).

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    V=${AUTOROUND_INTEL_VENV:-$HOME/.cache/autoround-dev/intel-venv}
    $V/bin/python scripts/intel/make_gptq_awq_fixtures.py [--out tests/fixtures/intel]

Reads  OUT/tiny_llama_dense/ (scripts/intel/make_tiny_fixture.py)
Writes OUT/tiny_llama_gptq_w4_g32/  AutoRound(dense, scheme="W4A16", group_size=32, iters=0,
                                    disable_opt_rtn=True, device_map="cpu",
                                    disable_model_free=True).quantize_and_save(format="auto_gptq")
       OUT/tiny_llama_awq_w4_g32/   the same call with sym=False, format="auto_awq"
       OUT/tiny_llama_gptq_awq_fixtures.json   versions and the calls
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

FIXTURES = {
    "tiny_llama_gptq_w4_g32": ("auto_gptq", {"scheme": "W4A16", "group_size": 32}),
    "tiny_llama_awq_w4_g32": ("auto_awq", {"scheme": "W4A16", "group_size": 32, "sym": False}),
}


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
        shutil.move(folders[0], out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for root, _, files in os.walk(out_dir):
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    return {"call": call, "format": fmt}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "fixtures", "intel"))
    args = ap.parse_args()

    import auto_round
    import torch
    import transformers

    out = os.path.abspath(args.out)
    dense = os.path.join(out, "tiny_llama_dense")
    manifest = {
        "generator": "scripts/intel/make_gptq_awq_fixtures.py",
        "auto_round": auto_round.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dense": "tiny_llama_dense",
    }
    for name, (fmt, kwargs) in FIXTURES.items():
        target = os.path.join(out, name)
        manifest[name] = export(dense, target, fmt, kwargs)
        size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(target) for f in fs)
        print(f"wrote {target} ({size} bytes)")
    with open(os.path.join(out, "tiny_llama_gptq_awq_fixtures.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
