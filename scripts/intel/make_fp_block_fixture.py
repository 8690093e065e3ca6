"""Generate Intel auto-round 0.16.1 references for FP8_BLOCK (``block_fp8``) SignRound tuning:
the quantize-dequantize of a weight in 2-D tiles for given rounding offsets ``v`` and per-tile
clipping factors ``max_scale``, and the straight-through gradients that reach them.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    ~/.cache/autoround-dev/intel-venv/bin/python scripts/intel/make_fp_block_fixture.py \
        [--out tests/fixtures/intel]

Writes ``fp_block_tuning.safetensors`` into ``--out`` (case list and versions in its metadata).
(Plain round-to-nearest ``block_fp8`` cases, partial edge tiles included, are in
``fp_qdq.safetensors``: ``make_fp_fixture.py``.)

What it calls: the weight function Intel's ``WrapperLinear`` resolves for a tuple group size
(``get_quant_func("fp", 8, True, disable_opt_rtn=True, iters=200, group_size=block)``:
``quant_block_fp_sym``), called as ``_qdq_weight`` calls it: ``fn(w, bits=8, group_size=block,
v=v, min_scale=1.0, max_scale=max_scale, data_type=<resolved>)`` with ``v`` of the wrapper's
shape (row tiles, column tiles, rows, columns) and ``max_scale`` of its shape (row tiles, column
tiles) (``get_scale_shape``: ``rows // tile_rows``, which is why these weights are whole tiles:
Intel's factor shape does not cover a partial edge tile), float32 leaf tensors that require
gradients.

* Blocks (16, 32) on a (48, 96) weight (3 x 3 tiles), seeded ``randn * 0.05``, float32,
  bfloat16 and float16; tile (1, 1) all zero, tile (2, 0) tiny (``* 1e-4``), tile (0, 2) with
  one 10x spike.
* ``v`` uniform in [-0.5, 0.5]; ``max_scale`` uniform in [0.5, 1].
* The gradients are those of ``sum(qdq.float() * upstream)`` for a seeded ``randn`` upstream
  gradient (stored).

Tensor keys: ``in.<dtype>``, ``upstream``, ``v``, ``max_scale``; per dtype ``<dtype>.qdq``,
``.scale``, ``.grad_v``, ``.grad_max_scale``.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from safetensors.torch import save_file

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHAPE = (48, 96)
BLOCK = (16, 32)


def weight_input() -> torch.Tensor:
    """The (48, 96) float32 weight with an all-zero, a tiny and a spiked tile."""
    torch.manual_seed(4001)
    w = torch.randn(SHAPE) * 0.05
    r, c = BLOCK
    w[r : 2 * r, c : 2 * c] = 0.0
    w[2 * r : 3 * r, 0:c] *= 1e-4
    w[3, 2 * c + 5] *= 10.0
    return w


def main() -> None:
    from auto_round import __version__ as ar_version
    from auto_round.data_type.utils import get_quant_func

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="tests/fixtures/intel")
    args = parser.parse_args()
    fn, resolved = get_quant_func("fp", 8, True, disable_opt_rtn=True, iters=200, group_size=BLOCK)
    tiles = (SHAPE[0] // BLOCK[0], SHAPE[1] // BLOCK[1])
    torch.manual_seed(4002)
    v0 = torch.rand(*tiles, *BLOCK) - 0.5
    m0 = torch.rand(tiles) * 0.5 + 0.5
    upstream = torch.randn(SHAPE)
    base = weight_input()
    tensors = {"upstream": upstream, "v": v0, "max_scale": m0}
    for dname, dtype in DTYPES.items():
        w = base.to(dtype)
        tensors[f"in.{dname}"] = w
        v = v0.clone().requires_grad_(True)
        max_scale = m0.clone().requires_grad_(True)
        qdq, scale, _ = fn(
            w.clone(), bits=8, group_size=BLOCK, v=v, min_scale=1.0, max_scale=max_scale, data_type=resolved
        )
        (qdq.float() * upstream).sum().backward()
        tensors[f"{dname}.qdq"] = qdq.detach()
        tensors[f"{dname}.scale"] = scale.detach()
        tensors[f"{dname}.grad_v"] = v.grad
        tensors[f"{dname}.grad_max_scale"] = max_scale.grad
    meta = {
        "auto_round": ar_version,
        "torch": torch.__version__,
        "func": fn.__name__,
        "resolved": resolved,
        "block": json.dumps(list(BLOCK)),
        "dtypes": json.dumps(list(DTYPES)),
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "fp_block_tuning.safetensors")
    save_file({k: t.contiguous() for k, t in tensors.items()}, path, metadata=meta)
    print(f"wrote {path}: {len(tensors)} tensors, {resolved}")


if __name__ == "__main__":
    main()
