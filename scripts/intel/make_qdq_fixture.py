"""Generate Intel auto-round 0.16.1 integer quantize-dequantize (qdq) reference outputs.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    ~/.cache/autoround-dev/intel-venv/bin/python scripts/intel/make_qdq_fixture.py \
        [--out tests/fixtures/intel]

Writes ``int_qdq.safetensors`` and ``int_qdq.json`` (the case list) into ``--out``.

What it calls (auto_round 0.16.1, ``auto_round/data_type/int.py``), looked up through the
registry ``auto_round.data_type.QUANT_FUNC_WITH_DTYPE``:

* ``"int_sym"``      -> ``quant_tensor_sym(tensor, bits, group_size, v, min_scale, max_scale,
                        scale_dtype=torch.float16, q_scale_thresh=1e-5)``   (SignRound's sym
                        function; "full range" variant, scale may be negative)
* ``"int_asym"``     -> ``quant_tensor_asym(...)`` with the same arguments (SignRound's asym)
* ``"rtn_int_sym"``  -> ``quant_tensor_rtn_sym(tensor, bits, group_size, q_scale_thresh=1e-5,
                        scale_dtype=torch.float16)`` (what RTN with ``iters=0,
                        disable_opt_rtn=True`` resolves to for sym int; there is no
                        ``rtn_int_asym``, so RTN asym uses ``int_asym``)

Every call is ``fn(x, bits=..., group_size=..., **extra)`` under ``torch.no_grad()``; the
returned ``(qdq, scale, zp)`` are stored as they come back (``scale`` keeps the shape the
function returns: ``(n_groups_total, 1)`` for group quantization; ``zp`` is the int ``maxq``
(= 2**(bits-1)) for the sym functions, stored as a 0-d int64 tensor, and a float tensor for
asym).  ``tensor_min``/``tensor_max`` are not passed (the functions compute them from ``x``;
SignRound's wrapper passes the same per-group min/max, so the result is identical).

Cases (inputs seeded, ``torch.randn * 0.05``; rows 0/1 of the (8, 64) input are set to an
all-zero row and an all-positive row to exercise the ``q_scale_thresh`` clamp and a one-sided
range):
  shapes/groups: (8, 64) g32; (6, 80) g32 (partial last group, zero-padded by
  ``reshape_pad_tensor_by_group_size``); (4, 100) g-1 (per row); (4, 64) g0 (per tensor);
  (3, 20) g32 (narrower than the group -> per row);
  bits 2, 3, 4, 8; input dtype float32 and bfloat16; functions int_sym, int_asym
  (rtn_int_sym: bits 2 and 4 only -- it was seen to give results identical to int_sym).
Tunable cases (SignRound style, ``int_sym``/``int_asym``, (6, 80) g32 and (8, 64) g32, fp32
and bf16, bits 4 and 2): ``v`` float32 with the padded-reshaped shape ``(rows*groups, group)``
drawn uniform in [-0.5, 0.5]; ``min_scale``/``max_scale`` float32 of shape ``(rows*groups,)``
drawn uniform in [0.6, 1.0] (SignRound clamps them to [0, 1]).  One case with
``scale_dtype=torch.float32`` (and ``q_scale_thresh=1e-8`` as the wrapper then uses).

Tensor keys: ``<case>.qdq``, ``<case>.scale``, ``<case>.zp`` and the shared inputs
``<input_id>`` / ``<case>.v`` / ``<case>.min_scale`` / ``<case>.max_scale``; the JSON lists,
per case, the registered name, bits, group_size, the input key and the extra arguments.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from safetensors.torch import save_file

SHAPES = [  # (rows, cols, group_size)
    (8, 64, 32),
    (6, 80, 32),
    (4, 100, -1),
    (4, 64, 0),
    (3, 20, 32),
]
BITS = [2, 3, 4, 8]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FUNCS = ["int_sym", "int_asym", "rtn_int_sym"]


def make_input(rows: int, cols: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, cols, generator=g, dtype=torch.float32) * 0.05
    if rows == 8 and cols == 64:
        x[0] = 0.0
        x[1] = x[1].abs() + 0.01
    return x.to(dtype)


def n_groups_total(rows: int, cols: int, group_size: int) -> int:
    if group_size == 0:
        return 1
    if group_size == -1 or cols < group_size:
        return rows
    return rows * -(-cols // group_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "intel")
    )
    args = ap.parse_args()

    import auto_round
    from auto_round.data_type import QUANT_FUNC_WITH_DTYPE

    tensors: dict[str, torch.Tensor] = {}
    cases: list[dict] = []

    def run_case(fn_name, x_key, bits, group_size, extra_tensors=None, extra_args=None):
        cid = f"c{len(cases):03d}"
        fn = QUANT_FUNC_WITH_DTYPE[fn_name]
        x = tensors[x_key]
        kwargs = dict(extra_args or {})
        for k, t in (extra_tensors or {}).items():
            tensors[f"{cid}.{k}"] = t
            kwargs[k] = t
        with torch.no_grad():
            qdq, scale, zp = fn(x.clone(), bits=bits, group_size=group_size, **kwargs)
        tensors[f"{cid}.qdq"] = qdq.contiguous()
        tensors[f"{cid}.scale"] = scale.detach().contiguous()
        if isinstance(zp, torch.Tensor):
            tensors[f"{cid}.zp"] = zp.detach().contiguous()
        else:
            tensors[f"{cid}.zp"] = torch.tensor(zp, dtype=torch.int64)
        meta = {
            "id": cid,
            "func": fn_name,
            "python_func": fn.__name__,
            "input": x_key,
            "input_dtype": str(x.dtype).removeprefix("torch."),
            "shape": list(x.shape),
            "bits": bits,
            "group_size": group_size,
            "tensor_args": sorted((extra_tensors or {}).keys()),
            "args": {k: (str(v) if isinstance(v, torch.dtype) else v) for k, v in (extra_args or {}).items()},
            "out_dtypes": {
                "qdq": str(qdq.dtype).removeprefix("torch."),
                "scale": str(scale.dtype).removeprefix("torch."),
                "zp": str(tensors[f"{cid}.zp"].dtype).removeprefix("torch."),
            },
        }
        cases.append(meta)
        return cid

    # Plain cases.
    for si, (rows, cols, gs) in enumerate(SHAPES):
        for dname, dtype in DTYPES.items():
            x_key = f"in.{rows}x{cols}.{dname}"
            tensors[x_key] = make_input(rows, cols, dtype, seed=1000 + si)
            for fn_name in FUNCS:
                # rtn_int_sym equals int_sym at v=0 (checked); keep a few cases of it only
                for bits in BITS if fn_name != "rtn_int_sym" else (2, 4):
                    run_case(fn_name, x_key, bits, gs)

    # Tunable (SignRound-style) cases: v, min_scale, max_scale.
    for si, (rows, cols, gs) in enumerate(SHAPES[:2]):
        ng = n_groups_total(rows, cols, gs)
        padded_cols = -(-cols // gs) * gs
        for dname in DTYPES:
            x_key = f"in.{rows}x{cols}.{dname}"
            for fn_name in ("int_sym", "int_asym"):
                for bits in (4, 2):
                    g = torch.Generator().manual_seed(5000 + 100 * si + 10 * bits + (fn_name == "int_asym"))
                    v = torch.rand(ng, gs, generator=g) - 0.5
                    min_scale = 0.6 + 0.4 * torch.rand(ng, generator=g)
                    max_scale = 0.6 + 0.4 * torch.rand(ng, generator=g)
                    assert v.numel() == rows * padded_cols
                    run_case(
                        fn_name,
                        x_key,
                        bits,
                        gs,
                        extra_tensors={"v": v, "min_scale": min_scale, "max_scale": max_scale},
                    )
    # scale_dtype float32 (the wrapper then uses q_scale_thresh=1e-8).
    for fn_name in ("int_sym", "int_asym"):
        run_case(
            fn_name,
            "in.8x64.float32",
            4,
            32,
            extra_args={"scale_dtype": torch.float32, "q_scale_thresh": 1e-8},
        )

    os.makedirs(args.out, exist_ok=True)
    st_path = os.path.join(args.out, "int_qdq.safetensors")
    save_file(tensors, st_path, metadata={"generator": "scripts/intel/make_qdq_fixture.py"})
    side = {
        "generator": "scripts/intel/make_qdq_fixture.py",
        "auto_round_version": auto_round.__version__,
        "torch_version": torch.__version__,
        "source": "auto_round/data_type/int.py via auto_round.data_type.QUANT_FUNC_WITH_DTYPE",
        "defaults": {
            "scale_dtype": "torch.float16",
            "q_scale_thresh": 1e-5,
            "v": 0,
            "min_scale": 1.0,
            "max_scale": 1.0,
        },
        "notes": [
            "keys: <id>.qdq, <id>.scale, <id>.zp; tunable inputs <id>.v/.min_scale/.max_scale;"
            " inputs by 'input'",
            "sym functions return zp = 2**(bits-1) (python int), stored as 0-d int64",
            "scale shape is what the function returns: (n_groups_total, 1) (per-tensor: (1, 1))",
        ],
        "cases": cases,
    }
    with open(os.path.join(args.out, "int_qdq.json"), "w") as f:
        f.write("{\n")
        for i, (k, val) in enumerate(side.items()):
            sep = "," if i < len(side) - 1 else ""
            if k == "cases":
                rows = ",\n  ".join(json.dumps(c, separators=(",", ":")) for c in val)
                f.write(f' "cases": [\n  {rows}\n ]{sep}\n')
            else:
                f.write(f" {json.dumps(k)}: {json.dumps(val)}{sep}\n")
        f.write("}\n")
    os.chmod(st_path, 0o644)
    print(f"wrote {len(cases)} cases, {os.path.getsize(st_path)} bytes -> {st_path}")


if __name__ == "__main__":
    main()
