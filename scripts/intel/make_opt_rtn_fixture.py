"""Write Intel auto-round 0.16.1 optimized-RTN outputs (``opt_rtn_int_sym``) for reference tests.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    V=${AUTOROUND_INTEL_VENV:-$HOME/.cache/autoround-dev/intel-venv}
    $V/bin/python scripts/intel/make_opt_rtn_fixture.py [--out tests/fixtures/intel/opt_rtn.safetensors]

For each case it calls ``auto_round.data_type.int.quant_tensor_opt_rtn_sym(w, bits, group_size,
imatrix=...)`` (what ``iters=0`` without ``disable_opt_rtn`` runs for sym int weights; the
imatrix is the per-input-channel mean squared activation) and stores, per case ``<c>``:
``<c>.weight`` (input, fp32 or bf16), ``<c>.imatrix`` (fp32, absent for "no imatrix"),
``<c>.scale`` (Intel's searched scale, (groups, 1), in the weight dtype, before any fp16 cast)
and ``<c>.qdq`` (Intel's quantize-dequantized weight). The safetensors metadata ``cases`` holds
a JSON list of ``{"name", "bits", "group_size", "dtype", "imatrix"}``.
"""

from __future__ import annotations

import argparse
import json
import os

CASES = [
    # name, bits, group_size, dtype, rows, cols, imatrix kind
    ("w4_g32_fp32", 4, 32, "float32", 16, 128, "random"),
    ("w4_g32_bf16", 4, 32, "bfloat16", 16, 128, "random"),
    ("w2_g64_fp32", 2, 64, "float32", 16, 128, "random"),
    ("w2_g64_bf16", 2, 64, "bfloat16", 16, 128, "random"),
    ("w3_g32_fp32_noimat", 3, 32, "float32", 16, 128, "none"),
    ("w4_g64_partial_zeros", 4, 64, "float32", 16, 96, "zeros"),
    ("w2_g32_zeros_bf16", 2, 32, "bfloat16", 16, 96, "zeros"),
    ("w4_perrow_fp32", 4, -1, "float32", 16, 96, "random"),
]


def make_inputs(rows: int, cols: int, kind: str, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen) * 0.02
    # heavier tails and an all-zero group, as real layers have
    w[0, :8] *= 6.0
    w[1, 5] = 0.3
    w[2, :32] = 0.0
    if kind == "none":
        return w, None
    imat = torch.rand(cols, generator=gen) ** 3 * 4.0 + 1e-3
    if kind == "zeros":
        imat[:40] = 0.0  # more than half of a 32/64 group: |w| fallback
        imat[70:73] = 0.0  # a few: mean fill
    return w, imat


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="tests/fixtures/intel/opt_rtn.safetensors")
    args = parser.parse_args()

    import auto_round
    import torch
    from auto_round.data_type.int import quant_tensor_opt_rtn_sym
    from safetensors.torch import save_file

    tensors = {}
    meta = []
    for i, (name, bits, group_size, dtype, rows, cols, kind) in enumerate(CASES):
        w, imat = make_inputs(rows, cols, kind, seed=1000 + i)
        w = w.to(getattr(torch, dtype))
        qdq, scale, _ = quant_tensor_opt_rtn_sym(
            w.clone(),
            bits=bits,
            group_size=group_size,
            q_scale_thresh=1e-5,
            imatrix=imat.clone() if imat is not None else None,
        )
        tensors[f"{name}.weight"] = w.contiguous()
        if imat is not None:
            tensors[f"{name}.imatrix"] = imat.contiguous()
        tensors[f"{name}.scale"] = scale.contiguous()
        tensors[f"{name}.qdq"] = qdq.contiguous()
        meta.append({"name": name, "bits": bits, "group_size": group_size, "dtype": dtype, "imatrix": kind})
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(
        tensors,
        args.out,
        metadata={
            "cases": json.dumps(meta),
            "auto_round": auto_round.__version__,
            "torch": torch.__version__,
            "function": "auto_round.data_type.int.quant_tensor_opt_rtn_sym",
        },
    )
    print(f"wrote {args.out}: {len(meta)} cases, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
