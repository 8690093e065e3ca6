"""Tiny-model Intel checkpoint fixture: a seeded random bf16 Llama and its Intel RTN W4A16 g32.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    V=${AUTOROUND_INTEL_VENV:-$HOME/.cache/autoround-dev/intel-venv}
    $V/bin/python scripts/intel/make_tiny_fixture.py [--out tests/fixtures/intel]

Writes
  OUT/tiny_llama_dense/         LlamaForCausalLM, hidden 64, intermediate 128, 2 layers,
                                4 heads / 2 kv heads (head_dim 16), vocab 288, tied embeddings,
                                bf16, seed 0 (scripts/intel/tiny_llama.py), plus its tokenizer
  OUT/tiny_llama_w4a16_g32/     AutoRound(OUT/tiny_llama_dense, scheme="W4A16", group_size=32,
                                iters=0, disable_opt_rtn=True, device_map="cpu",
                                disable_model_free=True).quantize_and_save(..., format="auto_round")
  OUT/tiny_llama_fixture.json   versions, the call, and the dtype Intel quantized in
                                (``amp``/``amp_dtype``: bf16 on a CPU with AVX512_BF16 and on
                                CUDA; float32 + ``"amp": false`` in the config elsewhere).

All Linear shapes are multiples of 32, so every Linear is quantized (Intel keeps layers whose
in or out features are not a multiple of 32 in 16 bits).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from make_rtn_checkpoints import run_one  # noqa: E402
from tiny_llama import build_tiny_llama  # noqa: E402

TINY = dict(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=288, seed=0, tie=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "fixtures", "intel"))
    args = ap.parse_args()

    import auto_round
    import torch
    import transformers

    out = os.path.abspath(args.out)
    dense = os.path.join(out, "tiny_llama_dense")
    quant = os.path.join(out, "tiny_llama_w4a16_g32")
    for d in (dense, quant):
        if os.path.exists(d):
            shutil.rmtree(d)
    build_tiny_llama(dense, **TINY)
    info = run_one(
        dense,
        quant,
        {"scheme": "W4A16", "group_size": 32},
        layer_config=None,
        amp_off=False,
        flow="regular",
    )
    # The loader records the absolute source path nowhere in the output; keep the fixture
    # free of machine-specific files.
    for d in (dense, quant):
        for root, _, files in os.walk(d):
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
    manifest = {
        "generator": "scripts/intel/make_tiny_fixture.py",
        "auto_round": auto_round.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tiny_llama": TINY,
        "dense": "tiny_llama_dense",
        "quantized": "tiny_llama_w4a16_g32",
        "intel": info,
    }
    with open(os.path.join(out, "tiny_llama_fixture.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    total = sum(
        os.path.getsize(os.path.join(r, f)) for d in (dense, quant) for r, _, fs in os.walk(d) for f in fs
    )
    print(f"wrote {dense} and {quant} ({total} bytes); amp={info['amp']} ({info['amp_dtype']})")


if __name__ == "__main__":
    main()
