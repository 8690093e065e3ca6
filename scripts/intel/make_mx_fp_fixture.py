"""Generate Intel auto-round 0.16.1 MX floating-point quantize-dequantize (qdq) reference outputs.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    ~/.cache/autoround-dev/intel-venv/bin/python scripts/intel/make_mx_fp_fixture.py \
        [--out tests/fixtures/intel]

Writes ``mx_fp_qdq.safetensors`` into ``--out`` (case list and versions in its metadata).

What it calls (auto_round 0.16.1, ``auto_round/data_type/mxfp.py``): the function Intel's plain
RTN (``iters=0, disable_opt_rtn=True``) resolves for ``data_type="mx_fp"``, looked up the way
Intel does it (``auto_round.data_type.utils.get_quant_func``), i.e. ``quant_mx`` under the
name ``mx_fp<bits>`` (4: E2M1, 6: E2M3, 8: E4M3), with floor rounding of the shared exponent
and round-half-to-even mantissas. It is called as ``fn(x, bits=..., group_size=32,
data_type="mx_fp")`` under ``torch.no_grad()``; the returned ``(qdq, shared_exp, None)`` are
stored as they come back (``shared_exp`` (groups_total, 1) in the input's dtype).

Inputs (seeded ``torch.randn * 0.05``, float32 and bfloat16):
  ``edges`` (9, 96): rows 0-2 random; row 3 all zeros; row 4 tiny magnitudes (down to float32
  subnormals, so the shared exponent clamps at -127); row 5 huge magnitudes (up to 3e38, so the
  shared exponent reaches 125); row 6 negative only; row 7 one value repeated; row 8 exact
  E2M1 grid midpoints (round-half-to-even ties, group maxima 5, 2.5 and 40) and one value just
  below the smallest midpoint.
  ``partial`` (4, 80): a partial last group (zero-padded by Intel and by us).
  ``narrow`` (3, 20): rows narrower than the group (one group per row).

Tensor keys: ``in.<input>.<dtype>``; ``mx_fp<bits>.<input>.<dtype>.qdq`` and ``.shared_exp``.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from safetensors.torch import save_file

BITS = (4, 6, 8)
GROUP_SIZE = 32
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def edge_input(seed: int) -> torch.Tensor:
    """Random rows plus the edge cases named in the module docstring."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(9, 96, generator=g) * 0.05
    x[3] = 0.0
    x[4] = torch.randn(96, generator=g) * torch.logspace(-44, -36, 96)
    x[5] = torch.randn(96, generator=g).sign() * torch.logspace(30, 38.47, 96)
    x[6] = -x[6].abs() - 1e-3
    x[7] = 0.3
    # Every midpoint between E2M1 levels, signed; the group maximum 5 gives E2M1 the shared
    # scale 1, so each is a round-half-to-even tie (groups 2 and 3: the same scaled by 1/2, 8).
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 4.0])
    signed = torch.cat([ties, -ties, ties, -ties])
    x[8] = torch.cat([signed, signed / 2, signed * 8])
    # Just below the first tie: 0.25 - 2**-26 scales to 0.5 - 2**-25, where floor(m + 0.5)
    # rounds up in float32 while exact round-half-to-even gives 0.
    x[8, 31] = 0.25 - 2**-26
    return x


def random_input(rows: int, cols: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) * 0.05


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "intel")
    )
    args = ap.parse_args()

    import auto_round
    from auto_round.data_type.utils import get_quant_func

    inputs = {
        "edges": edge_input(2000),
        "partial": random_input(4, 80, 2001),
        "narrow": random_input(3, 20, 2002),
    }
    tensors: dict[str, torch.Tensor] = {}
    cases = []
    for bits in BITS:
        fn, resolved = get_quant_func("mx_fp", bits, True, disable_opt_rtn=True, iters=0)
        for name, x32 in inputs.items():
            for dname, dtype in DTYPES.items():
                x = x32.to(dtype)
                tensors[f"in.{name}.{dname}"] = x
                with torch.no_grad():
                    qdq, shared_exp, _ = fn(x.clone(), bits=bits, group_size=GROUP_SIZE, data_type="mx_fp")
                key = f"mx_fp{bits}.{name}.{dname}"
                tensors[f"{key}.qdq"] = qdq.contiguous()
                tensors[f"{key}.shared_exp"] = shared_exp.contiguous()
                cases.append({"key": key, "func": fn.__name__, "resolved": resolved, "bits": bits})

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "mx_fp_qdq.safetensors")
    meta = {
        "generator": "scripts/intel/make_mx_fp_fixture.py",
        "auto_round_version": auto_round.__version__,
        "torch_version": torch.__version__,
        "group_size": str(GROUP_SIZE),
        "cases": json.dumps(cases),
    }
    save_file(tensors, path, metadata=meta)
    os.chmod(path, 0o644)
    print(f"wrote {len(cases)} cases, {os.path.getsize(path)} bytes -> {path}")


if __name__ == "__main__":
    main()
