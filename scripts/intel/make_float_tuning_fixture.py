"""Generate Intel auto-round 0.16.1 SignRound tuning references for the float weight types:
the quantize-dequantize of a weight for given rounding offsets ``v`` and clipping factors, and
the straight-through gradients that reach them.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    ~/.cache/autoround-dev/intel-venv/bin/python scripts/intel/make_float_tuning_fixture.py \
        [--out tests/fixtures/intel]

Writes ``float_tuning_qdq.safetensors`` into ``--out`` (case list and versions in its metadata).

What it calls: the weight function Intel's ``WrapperLinear`` resolves for SignRound
(``auto_round.data_type.utils.get_quant_func(data_type, bits, True, disable_opt_rtn=True,
iters=200)``), called as the wrapper's ``_qdq_weight`` calls it: ``fn(w, bits=b, group_size=g,
v=v, min_scale=1.0, max_scale=max_scale, data_type=<resolved>, global_scale=<nv_fp only:
calculate_gparam(w, 16)>)``, with ``v`` (grouped shape) and ``max_scale`` (groups,) float32
leaf tensors that require gradients. The searched-scale start (``enable_alg_ext``, Intel's
``SignRoundOptimizedWrapperLinear``) passes ``init_scale`` too: ``quant_mx`` for ``"mx_fp"``,
``nv_fp4`` for ``"nv_fp"`` (the functions ``get_optimized_quant_func`` returns), with a given
``init_scale`` (groups, 1) (the search itself is covered by the optimized-RTN fixtures).

* ``mx_fp`` 4/6/8, ``mx_fp_rceil`` 4/8, ``mx_int`` 2/4/8, ``mx_fp6e3m2`` 6, ``mx_fp8e5m2`` 8:
  group 32; ``nv_fp`` 4: group 16; ``fp`` 8: groups -1 (per row), 0 (per tensor) and 32.
* Weights (6, 64), seeded ``randn * 0.05``, float32 and bfloat16: row 3 all zero, row 4 tiny
  (``* 1e-4``, subnormal element steps), row 5 with one 10x spike per group.
* ``v`` uniform in [-0.5, 0.5]; ``max_scale`` uniform in [0.5, 1] ([0.5, 2] with an
  ``init_scale``, which is drawn from {0.5, 1, 2} for MX and [0.5, 1.51] for NVFP4).
* The gradients are those of ``sum(qdq.float() * upstream)`` for a seeded ``randn`` upstream
  gradient (stored). Intel's gradient is NaN for an MX group that is all zero (``log2(0)``
  under a ``where``) and for an NVFP4 block whose scale is 0; they are stored as they come.

Tensor keys: ``in.<dtype>``, ``upstream``; per case ``<case>.v``, ``.max_scale`` and
``.init_scale`` (searched start only), and per case and dtype ``<case>.<dtype>.qdq``,
``.grad_v``, ``.grad_max_scale`` (``<case>`` is ``<data_type><bits>.g<group>.<classic|searched>``).
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from safetensors.torch import save_file

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SHAPE = (6, 64)
#: (data_type, bits, group_size, searched start)
CASES = [
    *[("mx_fp", b, 32, False) for b in (4, 6, 8)],
    *[("mx_fp_rceil", b, 32, False) for b in (4, 8)],
    *[("mx_int", b, 32, False) for b in (2, 4, 8)],
    ("mx_fp6e3m2", 6, 32, False),
    ("mx_fp8e5m2", 8, 32, False),
    ("nv_fp", 4, 16, False),
    *[("fp", 8, g, False) for g in (-1, 0, 32)],
    ("mx_fp", 4, 32, True),
    ("mx_fp", 8, 32, True),
    ("nv_fp", 4, 16, True),
]


def weight_input(seed: int) -> torch.Tensor:
    """The float32 weight described in the module docstring."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*SHAPE, generator=g) * 0.05
    x[3] = 0.0
    x[4] = x[4] * 1e-4
    x[5, ::16] = x[5, ::16] * 10.0
    return x


def groups_of(group_size: int) -> int:
    rows, cols = SHAPE
    if group_size == 0:
        return 1
    if group_size == -1:
        return rows
    return rows * cols // group_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/fixtures/intel")
    args = parser.parse_args()

    import auto_round
    from auto_round.data_type.mxfp import quant_mx
    from auto_round.data_type.nvfp import calculate_gparam, nv_fp4
    from auto_round.data_type.utils import get_quant_func

    base = weight_input(0)
    tensors: dict[str, torch.Tensor] = {}
    for dname, dtype in DTYPES.items():
        tensors[f"in.{dname}"] = base.to(dtype)
    upstream = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(1))
    tensors["upstream"] = upstream
    cases = []
    for index, (data_type, bits, group_size, searched) in enumerate(CASES):
        groups = groups_of(group_size)
        width = SHAPE[0] * SHAPE[1] // groups
        g = torch.Generator().manual_seed(100 + index)
        v0 = torch.rand(groups, width, generator=g) - 0.5
        high = 2.0 if searched else 1.0
        m0 = 0.5 + (high - 0.5) * torch.rand(groups, generator=g)
        init = None
        if searched and data_type.startswith("mx"):
            init = torch.tensor([0.5, 1.0, 2.0])[torch.randint(0, 3, (groups, 1), generator=g)]
        elif searched:
            init = 0.5 + 1.01 * torch.rand(groups, 1, generator=g)
        case = f"{data_type}{bits}.g{group_size}.{'searched' if searched else 'classic'}"
        tensors[f"{case}.v"] = v0
        tensors[f"{case}.max_scale"] = m0
        if init is not None:
            tensors[f"{case}.init_scale"] = init
        for dname in DTYPES:
            key = f"{case}.{dname}"
            weight = tensors[f"in.{dname}"]
            v = v0.clone().requires_grad_(True)
            max_scale = m0.clone().requires_grad_(True)
            extra: dict[str, object] = {}
            if data_type == "nv_fp":
                extra["global_scale"] = calculate_gparam(weight, 16)
            if searched:
                fn = quant_mx if data_type.startswith("mx") else nv_fp4
                resolved = f"mx_fp{bits}" if data_type.startswith("mx") else "nv_fp4"
                extra["init_scale"] = init
            else:
                fn, resolved = get_quant_func(data_type, bits, True, disable_opt_rtn=True, iters=200)
            qdq, _, _ = fn(
                weight,
                bits=bits,
                group_size=group_size,
                v=v,
                min_scale=torch.tensor(1.0),
                max_scale=max_scale,
                data_type=resolved,
                **extra,
            )
            (qdq.float() * upstream).sum().backward()
            tensors[f"{key}.qdq"] = qdq.detach()
            tensors[f"{key}.grad_v"] = v.grad
            tensors[f"{key}.grad_max_scale"] = max_scale.grad
            cases.append(
                {
                    "id": key,
                    "case": case,
                    "data_type": data_type,
                    "bits": bits,
                    "group_size": group_size,
                    "searched": searched,
                    "dtype": dname,
                    "intel_function": f"{fn.__name__}({resolved})",
                }
            )
    meta = {
        "cases": json.dumps(cases),
        "auto_round": auto_round.__version__,
        "torch": torch.__version__,
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "float_tuning_qdq.safetensors")
    save_file({k: t.contiguous() for k, t in tensors.items()}, path, metadata=meta)
    print(f"wrote {path}: {len(cases)} cases, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
