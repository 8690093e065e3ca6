"""Generate Intel auto-round 0.16.1 references for dynamic per-token activation quantization
(the ``INT8`` / ``INT8_W8A8`` presets' activations, ``INT4``'s 4-bit ones, and FP8 E4M3 dynamic
per-token ones).

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    ~/.cache/autoround-dev/intel-venv/bin/python scripts/intel/make_act_fixture.py \
        [--out tests/fixtures/intel]

Writes ``act_qdq.safetensors`` into ``--out`` (case list and versions in its metadata).

What it calls: the activation function Intel's ``WrapperLinear`` resolves for a round-to-nearest
run (``get_quant_func(act_data_type, act_bits, act_sym, disable_opt_rtn=True, iters=0)``:
``rtn_int_sym`` for ``"int"``, ``fp8_sym`` for ``"fp"``), called as ``WrapperWALayer.forward``
calls it after quantization: ``fn(x, bits=<8 or 4>, group_size=-1, scale_dtype=<Intel's default
float16>, q_scale_thresh=1e-5, data_type=<resolved>, min_scale=1.0, max_scale=1.0)``.

* Inputs (2, 5, 64) (batch, tokens, features), seeded ``randn``, in float32, bfloat16 and
  float16: token (0, 1) all zero, token (0, 2) tiny (``* 1e-6``), token (0, 3) with a 50x spike
  of either sign, token (1, 0) all negative, token (1, 4) large (``* 1e4``).

Tensor keys: ``in.<dtype>``; ``<kind>.<dtype>.qdq`` and ``<kind>.<dtype>.scale`` for ``<kind>``
``int8``, ``int4`` and ``fp8``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import auto_round
import torch
from auto_round.data_type.utils import get_quant_func
from safetensors.torch import save_file

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
KINDS = {"int8": ("int", 8), "int4": ("int", 4), "fp8": ("fp", 8)}


def inputs() -> torch.Tensor:
    """The float32 activations every case quantizes (cast to each dtype)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 64, generator=gen)
    x[0, 1] = 0.0
    x[0, 2] *= 1e-6
    x[0, 3, 7] = 50 * x[0, 3].abs().max()
    x[0, 3, 9] = -60 * x[0, 3].abs().max()
    x[1, 0] = -x[1, 0].abs()
    x[1, 4] *= 1e4
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/intel"))
    args = parser.parse_args()
    base = inputs()
    tensors: dict[str, torch.Tensor] = {}
    resolved = {}
    for kind, (data_type, bits) in KINDS.items():
        fn, name = get_quant_func(data_type, bits, True, disable_opt_rtn=True, iters=0)
        resolved[kind] = name
        for dname, dtype in DTYPES.items():
            x = base.to(dtype)
            tensors[f"in.{dname}"] = x.clone()
            qdq, scale, _ = fn(
                x.clone(),
                bits=bits,
                group_size=-1,
                scale_dtype=torch.float16,
                q_scale_thresh=1e-5,
                data_type=name,
                min_scale=1.0,
                max_scale=1.0,
            )
            tensors[f"{kind}.{dname}.qdq"] = qdq.contiguous()
            tensors[f"{kind}.{dname}.scale"] = scale.contiguous()
    meta = {
        "auto_round": auto_round.__version__,
        "torch": torch.__version__,
        "functions": json.dumps(resolved),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out / "act_qdq.safetensors"), metadata=meta)
    print(f"wrote {args.out / 'act_qdq.safetensors'}: {resolved}")


if __name__ == "__main__":
    main()
