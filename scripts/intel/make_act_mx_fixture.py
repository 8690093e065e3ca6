"""Generate Intel auto-round 0.16.1 references for dynamic grouped activation quantization: MX
activations per block of 32 features (the ``MXFP4``, ``MXFP8``, ``MXFP4_RCEIL``, ``MXFP8_RCEIL``,
``MXINT4`` presets' activations, and the other MX widths ``act_bits`` allows) and FP8 E4M3
activations per group (``FP8_BLOCK``'s: ``act_group_size=128``).

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    ~/.cache/autoround-dev/intel-venv/bin/python scripts/intel/make_act_mx_fixture.py \
        [--out tests/fixtures/intel]

Writes ``act_qdq_mx.safetensors`` into ``--out`` (case list and versions in its metadata).

What it calls: the activation function Intel's ``WrapperLinear`` resolves for a round-to-nearest
run (``get_quant_func(act_data_type, act_bits, act_sym=True, disable_opt_rtn=True, iters=0)``:
``quant_mx`` for ``mx_fp`` and ``mx_int``, ``quant_mx_rceil`` for ``mx_fp_rceil``,
``quant_fp8_sym`` for ``fp``), called as ``WrapperWALayer.forward`` calls it after quantization:
``fn(x, bits=act_bits, group_size=act_group_size, scale_dtype=torch.float16 (Intel's default),
q_scale_thresh=1e-5, data_type=<resolved>, min_scale=act_min_scale, max_scale=act_max_scale)``,
the two factors being the untuned ``torch.tensor(1.0)`` (float32) that ``WrapperLinear`` makes
for dynamic activations.

* Inputs, seeded ``randn`` in float32, bfloat16 and float16: ``wide`` (2, 5, 256) (batch, tokens,
  features) with token (0, 1) all zero, token (0, 2) tiny (``* 1e-6``), token (0, 3) with spikes
  of either sign, token (1, 0) all negative, token (1, 4) large (``* 1e3``), the first 32
  features of token (1, 1) zero (an all-zero block) and token (1, 2) with subnormal-scale
  values (``* 1e-30``: float16 flushes them to zero); ``rows`` (3, 160) (2-D, a width that is 5
  MX blocks and 1.25 groups of 128: Intel zero-pads the last group).

Tensor keys: ``in.<input>.<dtype>``; ``<kind>.<input>.<dtype>.qdq`` and ``.scale`` (Intel's
second return: the shared exponent for MX, the float32 scale for FP8), for the kinds of
``KINDS``.
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
#: Our kind name -> (act_data_type, act_bits, act_group_size).
KINDS = {
    "mxfp4": ("mx_fp", 4, 32),
    "mxfp6": ("mx_fp", 6, 32),
    "mxfp8": ("mx_fp", 8, 32),
    "mxfp4_rceil": ("mx_fp_rceil", 4, 32),
    "mxfp6_rceil": ("mx_fp_rceil", 6, 32),
    "mxfp8_rceil": ("mx_fp_rceil", 8, 32),
    "mxint4": ("mx_int", 4, 32),
    "mxint8": ("mx_int", 8, 32),
    "fp8_group128": ("fp", 8, 128),
    "fp8_group32": ("fp", 8, 32),
}


def inputs() -> dict[str, torch.Tensor]:
    """The float32 activations every case quantizes (cast to each dtype)."""
    gen = torch.Generator().manual_seed(0)
    wide = torch.randn(2, 5, 256, generator=gen)
    wide[0, 1] = 0.0
    wide[0, 2] *= 1e-6
    wide[0, 3, 7] = 50 * wide[0, 3].abs().max()
    wide[0, 3, 140] = -60 * wide[0, 3].abs().max()
    wide[1, 0] = -wide[1, 0].abs()
    wide[1, 1, :32] = 0.0
    wide[1, 2] *= 1e-30
    wide[1, 4] *= 1e3
    rows = torch.randn(3, 160, generator=gen) * torch.tensor([[0.01], [1.0], [100.0]])
    return {"wide": wide, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/intel"))
    args = parser.parse_args()
    tensors: dict[str, torch.Tensor] = {}
    resolved = {}
    for kind, (data_type, bits, group) in KINDS.items():
        fn, name = get_quant_func(data_type, bits, True, disable_opt_rtn=True, iters=0)
        resolved[kind] = [fn.__name__, name]
        for input_name, base in inputs().items():
            for dname, dtype in DTYPES.items():
                x = base.to(dtype)
                tensors[f"in.{input_name}.{dname}"] = x.clone()
                qdq, scale, _ = fn(
                    x.clone(),
                    bits=bits,
                    group_size=group,
                    scale_dtype=torch.float16,
                    q_scale_thresh=1e-5,
                    data_type=name,
                    min_scale=torch.tensor(1.0),
                    max_scale=torch.tensor(1.0),
                )
                tensors[f"{kind}.{input_name}.{dname}.qdq"] = qdq.contiguous()
                tensors[f"{kind}.{input_name}.{dname}.scale"] = scale.contiguous()
    meta = {
        "auto_round": auto_round.__version__,
        "torch": torch.__version__,
        "functions": json.dumps(resolved),
        "kinds": json.dumps(KINDS),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out / "act_qdq_mx.safetensors"), metadata=meta)
    print(f"wrote {args.out / 'act_qdq_mx.safetensors'}: {resolved}")


if __name__ == "__main__":
    main()
