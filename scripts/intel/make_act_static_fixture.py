"""Generate Intel auto-round 0.16.1 references for calibrated (static) activation quantization:
``FP8_STATIC``'s FP8 E4M3 per-tensor activations with a calibrated ``act_max`` and SignRound's
``act_max_scale``, and NVFP4's activations with a global scale from a calibrated ``act_max``.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    ~/.cache/autoround-dev/intel-venv/bin/python scripts/intel/make_act_static_fixture.py \
        [--out tests/fixtures/intel]

Writes ``act_static.safetensors`` into ``--out`` (case list and versions in its metadata).

What it calls, as Intel's ``WrapperLinear._qdq_act`` does (``auto_round/wrapper.py``):

* FP8: the function ``get_quant_func("fp", 8, True, disable_opt_rtn=True, iters=...)`` resolves
  (``fp8_sym`` for tuning, ``iters=200``, and for round-to-nearest, ``iters=0``: there is no
  ``rtn_fp8``), called as ``fn(x, bits=8, group_size=0, scale_dtype=float16, q_scale_thresh=1e-5,
  data_type=<resolved>, tensor_max=act_max, max_scale=act_max_scale, min_scale=1.0,
  global_scale=None)``; ``act_max`` shape (1,) float32 (what the calibration hooks leave),
  ``act_max_scale`` a float32 (1,) tensor requiring grad (SignRound's tuned parameter). The
  gradients of ``sum(qdq * g)`` (``g`` seeded ``randn``) to ``x`` and ``act_max_scale`` are kept.
* NVFP4: ``nv_fp4_with_static_gs`` (tuning) and ``rtn_nv_fp4_with_static_gs`` (round-to-nearest)
  as resolved by ``get_quant_func("nv_fp4_with_static_gs", 4, True, ...)``, called with
  ``group_size=16, tensor_max=act_max``, and ``calculate_gparam(act_max, 16)``, the checkpoint's
  ``input_global_scale``.

Inputs: (2, 5, 64) seeded ``randn`` with a zero token, a tiny one, a 50x / -60x spike, an
all-negative token and a large one (as make_act_fixture.py), in float32 and bfloat16; for NVFP4
also 40 features (a partial last block of 8) and 8 features (narrower than a block).
``act_max`` per case: the input's own max|x| times 1 (``self``), 0.25 (``clip``: many elements
clipped at 448) and 3 (``wide``). ``act_max_scale``: 1.0 and 0.6.

Tensor keys: ``in.<dtype>[.<width>]``; ``fp8.<dtype>.<case>.<factor>.{act_max,qdq,scale,grad_x,
grad_factor,g}``; ``fp8_rtn.<dtype>.<case>.qdq``; ``nv.<dtype>.<width>.<case>.{act_max,qdq,scale,
rtn_qdq,global_scale}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import auto_round
import torch
from auto_round.data_type.nvfp import calculate_gparam
from auto_round.data_type.utils import get_quant_func
from safetensors.torch import save_file

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CASES = {"self": 1.0, "clip": 0.25, "wide": 3.0}
FACTORS = {"f100": 1.0, "f060": 0.6}
NV_WIDTHS = (64, 40, 8)


def inputs(features: int = 64) -> torch.Tensor:
    """The float32 activations every case quantizes (cast to each dtype)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, features, generator=gen)
    x[0, 1] = 0.0
    x[0, 2] *= 1e-6
    x[0, 3, 7 % features] = 50 * x[0, 3].abs().max()
    x[0, 3, 5] = -60 * x[0, 3].abs().max()
    x[1, 0] = -x[1, 0].abs()
    x[1, 4] *= 1e4
    return x


def fp8_cases(tensors: dict[str, torch.Tensor], resolved: dict[str, str]) -> None:
    tune_fn, tune_name = get_quant_func("fp", 8, True, disable_opt_rtn=True, iters=200)
    rtn_fn, rtn_name = get_quant_func("fp", 8, True, disable_opt_rtn=True, iters=0)
    resolved.update({"fp8_tuning": tune_name, "fp8_rtn": rtn_name})
    gen = torch.Generator().manual_seed(1)
    for dname, dtype in DTYPES.items():
        base = inputs().to(dtype)
        tensors[f"in.{dname}"] = base.clone()
        for case, ratio in CASES.items():
            act_max = (base.to(torch.float32).abs().max() * ratio).reshape(1)
            for fname, factor in FACTORS.items():
                key = f"fp8.{dname}.{case}.{fname}"
                x = base.clone().requires_grad_(True)
                act_max_scale = torch.full((1,), factor, dtype=torch.float32, requires_grad=True)
                qdq, scale, _ = tune_fn(
                    x,
                    bits=8,
                    group_size=0,
                    scale_dtype=torch.float16,
                    q_scale_thresh=1e-5,
                    data_type=tune_name,
                    tensor_max=act_max,
                    max_scale=act_max_scale,
                    min_scale=torch.tensor(1.0),
                    global_scale=None,
                )
                g = torch.randn(qdq.shape, generator=gen).to(dtype)
                (qdq.to(torch.float32) * g.to(torch.float32)).sum().backward()
                tensors[f"{key}.act_max"] = act_max.clone()
                tensors[f"{key}.qdq"] = qdq.detach().contiguous()
                tensors[f"{key}.scale"] = scale.detach().reshape(-1).contiguous()
                tensors[f"{key}.g"] = g
                tensors[f"{key}.grad_x"] = x.grad.contiguous()
                tensors[f"{key}.grad_factor"] = act_max_scale.grad.contiguous()
            qdq, _, _ = rtn_fn(
                base.clone(),
                bits=8,
                group_size=0,
                data_type=rtn_name,
                tensor_max=act_max,
                max_scale=torch.tensor(1.0),
            )
            tensors[f"fp8_rtn.{dname}.{case}.qdq"] = qdq.contiguous()


def nv_cases(tensors: dict[str, torch.Tensor], resolved: dict[str, str]) -> None:
    tune_fn, tune_name = get_quant_func("nv_fp4_with_static_gs", 4, True, disable_opt_rtn=True, iters=200)
    rtn_fn, rtn_name = get_quant_func("nv_fp4_with_static_gs", 4, True, disable_opt_rtn=True, iters=0)
    resolved.update({"nv_tuning": tune_name, "nv_rtn": rtn_name})
    for dname, dtype in DTYPES.items():
        for width in NV_WIDTHS:
            base = inputs(width).to(dtype)
            tensors[f"in.{dname}.{width}"] = base.clone()
            for case, ratio in CASES.items():
                key = f"nv.{dname}.{width}.{case}"
                act_max = (base.to(torch.float32).abs().max() * ratio).reshape(1)
                qdq, scale, _ = tune_fn(
                    base.clone(),
                    bits=4,
                    group_size=16,
                    data_type=tune_name,
                    tensor_max=act_max,
                    global_scale=None,
                )
                rtn_qdq, _, _ = rtn_fn(
                    base.clone(), bits=4, group_size=16, data_type=rtn_name, tensor_max=act_max
                )
                tensors[f"{key}.act_max"] = act_max.clone()
                tensors[f"{key}.qdq"] = qdq.contiguous()
                tensors[f"{key}.scale"] = scale.contiguous()
                tensors[f"{key}.rtn_qdq"] = rtn_qdq.contiguous()
                tensors[f"{key}.global_scale"] = calculate_gparam(act_max, 16).reshape(1).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/intel"))
    args = parser.parse_args()
    tensors: dict[str, torch.Tensor] = {}
    resolved: dict[str, str] = {}
    fp8_cases(tensors, resolved)
    nv_cases(tensors, resolved)
    meta = {
        "auto_round": auto_round.__version__,
        "torch": torch.__version__,
        "functions": json.dumps(resolved),
        "cases": json.dumps(CASES),
        "factors": json.dumps(FACTORS),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out / "act_static.safetensors"), metadata=meta)
    print(f"wrote {args.out / 'act_static.safetensors'} ({len(tensors)} tensors): {resolved}")


if __name__ == "__main__":
    main()
