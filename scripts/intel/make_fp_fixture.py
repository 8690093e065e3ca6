"""Generate Intel auto-round 0.16.1 NVFP4, FP8 and MX-variant quantize-dequantize (qdq) reference outputs.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    ~/.cache/autoround-dev/intel-venv/bin/python scripts/intel/make_fp_fixture.py \
        [--out tests/fixtures/intel]

Writes ``fp_qdq.safetensors`` into ``--out`` (case list and versions in its metadata).

What it calls (auto_round 0.16.1), looked up the way Intel's plain RTN (``iters=0,
disable_opt_rtn=True``) does it (``auto_round.data_type.utils.get_quant_func``):

* ``data_type="nv_fp"``, bits 4 resolves ``nv_fp4`` (``data_type/nvfp.py``), called as
  ``WrapperLinear`` calls it: ``fn(x, bits=4, group_size=16, v=0, max_scale=1.0,
  global_scale=calculate_gparam(x, 16), data_type="nv_fp")``. Returned ``(qdq, scale, None)``;
  ``scale`` is each group's E4M3 block scale (float32, (groups, 1)).
* ``data_type="fp"``, bits 8 resolves ``fp8`` (``quant_fp8_sym``, ``data_type/fp8.py``) for an
  integer group size (-1 per row, 0 per tensor, N groups of N), and ``block_fp8``
  (``quant_block_fp_sym``) for a tuple group size (FP8_BLOCK's (128, 128)); called as
  ``fn(x, bits=8, group_size=g, v=0, max_scale=1.0, data_type="fp")``.

Inputs (seeded ``torch.randn * 0.05``; float32, bfloat16, and float16 for fp8):
  ``edges`` (9, 96): rows 0-2 random; row 3 all zeros; row 4 tiny magnitudes (down to float32
  subnormals); row 5 huge magnitudes (up to 3e38); row 6 negative only; row 7 one value repeated;
  row 8 E2M1 grid midpoints (ties) at three scales.
  ``outlier`` (6, 64): random with a few 100x spikes (block scales far below the global one).
  ``tiny`` (2, 32): magnitudes ~1e-37, so NVFP4's global scale 2688 / amax overflows to inf.
  ``zeros`` (2, 32): all zero (global amax 0).
  ``partial`` (4, 40): a partial last group (zero-padded by Intel and by us).
  ``narrow`` (3, 10): rows narrower than the group (one group per row).
  ``block`` (130, 136) with (128, 128) blocks (bfloat16 only) and ``block_small`` (40, 72)
  with (16, 32) blocks: both dimensions padded (fp8 block only).

* MX variants (``data_type/mxfp.py``), blocks of 32: ``data_type="mx_fp_rceil"`` (bits 4, 6,
  8) resolves ``mx_fp_rceil`` (``quant_mx_rceil``: shared exponent ``ceil(log2(amax /
  max_norm))``); ``"mx_int"`` (bits 2, 4, 8) resolves ``mx_int<bits>`` (``quant_mx`` with
  integer elements); ``"mx_fp6e3m2"`` / ``"mx_fp8e5m2"`` resolve themselves (``quant_mx``).
  Called as ``WrapperLinear`` calls them: ``fn(x, bits=b, group_size=32, v=0, max_scale=1.0,
  data_type=<resolved name>)``; ``scale`` is the returned shared exponent (input dtype).

* MX optimized RTN (Intel's default RTN, ``iters=0`` without ``disable_opt_rtn``):
  ``data_type="mx_fp"`` (bits 4, 6, 8) resolves ``opt_rtn_mx_fp`` (``quant_mx_opt_rtn``), called
  as ``fn(x, bits=b, group_size=32, v=0, data_type="opt_rtn_mx_fp", imatrix=imp)`` with ``imp``
  None, a random positive per-input-channel importance (``pos``), or that with zeros (``zeros``:
  the first group's first 20 channels, more than half, and 3 channels of the second group).
  Keys ``opt_rtn_mx_fp.bits<bits>.<imatrix>.<input>.<dtype>``; the ``imatrix.<kind>.<input>``
  tensors hold the importances. (``mx_int`` and ``mx_fp6e3m2`` resolve ``opt_rtn_mx_int4`` /
  ``opt_rtn_mx_fp6e3m2``, which ``quant_mx_opt_rtn`` does not find in its table and runs with
  ``mx_fp<bits>`` elements: recorded as ``opt_rtn_quirk.*`` cases.)

* NVFP4 optimized RTN: ``data_type="nv_fp"`` resolves ``opt_rtn_nv_fp4``
  (``opt_rtn_fast_nvfp4``), called as ``fn(x, bits=4, group_size=16, v=0,
  global_scale=calculate_gparam(x, 16), data_type="opt_rtn_nv_fp4", imatrix=imp)``; keys
  ``opt_rtn_nv_fp.<imatrix>.<input>.<dtype>``, importances as for MX.

compressed-tensors (installed in Intel's venv too) is not compared here: our own env has it,
and the test compares against it directly.

Tensor keys: ``in.<input>.<dtype>``; ``<case>.qdq`` and ``<case>.scale`` (MX variants' cases:
``<data_type>.bits<bits>.<input>.<dtype>``).
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from safetensors.torch import save_file

#: MX data types beyond plain ``mx_fp`` (made by make_mx_fp_fixture.py), with their bit widths.
MX_VARIANTS = (("mx_fp_rceil", (4, 6, 8)), ("mx_int", (2, 4, 8)), ("mx_fp6e3m2", (6,)), ("mx_fp8e5m2", (8,)))
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def edge_input(seed: int) -> torch.Tensor:
    """Random rows plus the edge cases named in the module docstring."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(9, 96, generator=g) * 0.05
    x[3] = 0.0
    x[4] = torch.randn(96, generator=g) * torch.logspace(-44, -36, 96)
    x[5] = torch.randn(96, generator=g).sign() * torch.logspace(30, 38.47, 96)
    x[6] = -x[6].abs() - 1e-3
    x[7] = 0.3
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0])
    signed = torch.cat([ties, -ties, ties, -ties])
    x[8] = torch.cat([signed, signed / 2, signed * 8])
    return x


def random_input(rows: int, cols: int, seed: int, std: float = 0.05) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=g) * std


def outlier_input(seed: int) -> torch.Tensor:
    x = random_input(6, 64, seed)
    x[0, 3] = 5.0
    x[2, 40] = -7.5
    x[5, 63] = 4.0
    return x


def importance(kind: str, cols: int, seed: int) -> torch.Tensor | None:
    """A per-input-channel importance for MX optimized RTN (see the module docstring)."""
    if kind == "none":
        return None
    g = torch.Generator().manual_seed(seed)
    imp = torch.rand(cols, generator=g) * 2 + 0.01
    if kind == "zeros":
        imp[: min(20, cols)] = 0.0
        imp[33:36] = 0.0
    return imp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "intel")
    )
    args = ap.parse_args()

    import auto_round
    from auto_round.data_type.nvfp import calculate_gparam
    from auto_round.data_type.utils import get_quant_func

    inputs = {
        "edges": edge_input(3000),
        "outlier": outlier_input(3001),
        "tiny": random_input(2, 32, 3002, std=1e-37),
        "zeros": torch.zeros(2, 32),
        "partial": random_input(4, 40, 3003),
        "narrow": random_input(3, 10, 3004),
        "block": random_input(130, 136, 3005),
        "block_small": random_input(40, 72, 3006),
    }
    tensors: dict[str, torch.Tensor] = {}
    cases = []

    def record(key: str, x: torch.Tensor, qdq: torch.Tensor, scale: torch.Tensor, **info: object) -> None:
        tensors[f"{key}.qdq"] = qdq.contiguous()
        tensors[f"{key}.scale"] = scale.contiguous()
        cases.append({"key": key, **info})

    def add_input(name: str, dname: str) -> torch.Tensor:
        x = inputs[name].to(DTYPES[dname])
        tensors[f"in.{name}.{dname}"] = x
        return x

    nv_fn, nv_resolved = get_quant_func("nv_fp", 4, True, disable_opt_rtn=True, iters=0)
    for name in ("edges", "outlier", "tiny", "zeros", "partial", "narrow"):
        for dname in ("float32", "bfloat16"):
            x = add_input(name, dname)
            gs = calculate_gparam(x, 16)
            with torch.no_grad():
                qdq, scale, _ = nv_fn(
                    x.clone(), bits=4, group_size=16, v=0, max_scale=1.0, global_scale=gs, data_type="nv_fp"
                )
            record(
                f"nv_fp4.{name}.{dname}",
                x,
                qdq,
                scale,
                dtype="nv_fp",
                bits=4,
                group_size=16,
                input=name,
                input_dtype=dname,
                func=nv_fn.__name__,
                resolved=nv_resolved,
                global_scale=gs.item(),
            )

    for group in (-1, 0, 32):
        fn, resolved = get_quant_func("fp", 8, True, disable_opt_rtn=True, iters=0)
        for name in ("edges", "outlier", "zeros", "partial", "narrow"):
            for dname in ("float32", "bfloat16", "float16"):
                if dname == "float16" and name == "edges":
                    continue  # edges overflow float16
                x = add_input(name, dname)
                with torch.no_grad():
                    qdq, scale, _ = fn(
                        x.clone(), bits=8, group_size=group, v=0, max_scale=1.0, data_type="fp"
                    )
                record(
                    f"fp8_g{group}.{name}.{dname}".replace("-", "m"),
                    x,
                    qdq,
                    scale,
                    dtype="fp",
                    bits=8,
                    group_size=group,
                    input=name,
                    input_dtype=dname,
                    func=fn.__name__,
                    resolved=resolved,
                )

    for name, block, dnames in (
        ("block", (128, 128), ("bfloat16",)),  # bfloat16 only: keeps the fixture small
        ("block_small", (16, 32), ("float32", "bfloat16")),
    ):
        fn, resolved = get_quant_func("fp", 8, True, disable_opt_rtn=True, iters=0, group_size=block)
        for dname in dnames:
            x = add_input(name, dname)
            with torch.no_grad():
                qdq, scale, _ = fn(x.clone(), bits=8, group_size=block, v=0, max_scale=1.0, data_type="fp")
            record(
                f"fp8_block.{name}.{dname}",
                x,
                qdq,
                scale,
                dtype="fp",
                bits=8,
                group_size=list(block),
                input=name,
                input_dtype=dname,
                func=fn.__name__,
                resolved=resolved,
            )

    for dtype, bit_widths in MX_VARIANTS:
        for bits in bit_widths:
            fn, resolved = get_quant_func(dtype, bits, True, disable_opt_rtn=True, iters=0)
            for name in ("edges", "partial", "narrow"):
                for dname in ("float32", "bfloat16"):
                    x = add_input(name, dname)
                    with torch.no_grad():
                        qdq, scale, _ = fn(
                            x.clone(), bits=bits, group_size=32, v=0, max_scale=1.0, data_type=resolved
                        )
                    record(
                        f"{dtype}.bits{bits}.{name}.{dname}",
                        x,
                        qdq,
                        scale,
                        dtype=dtype,
                        bits=bits,
                        group_size=32,
                        input=name,
                        input_dtype=dname,
                        func=fn.__name__,
                        resolved=resolved,
                    )

    for bits in (4, 6, 8):
        fn, resolved = get_quant_func("mx_fp", bits, True, disable_opt_rtn=False, iters=0)
        for name in ("edges", "partial", "narrow"):
            for kind in ("none", "pos", "zeros"):
                imp = importance(kind, inputs[name].shape[1], 3100)
                if imp is not None:
                    tensors[f"imatrix.{kind}.{name}"] = imp
                for dname in ("float32", "bfloat16"):
                    x = add_input(name, dname)
                    with torch.no_grad():
                        qdq, scale, _ = fn(
                            x.clone(), bits=bits, group_size=32, v=0, data_type=resolved, imatrix=imp
                        )
                    record(
                        f"opt_rtn_mx_fp.bits{bits}.{kind}.{name}.{dname}",
                        x,
                        qdq,
                        scale,
                        dtype="mx_fp",
                        bits=bits,
                        group_size=32,
                        input=name,
                        input_dtype=dname,
                        imatrix=kind,
                        func=fn.__name__,
                        resolved=resolved,
                    )
    fn, resolved = get_quant_func("nv_fp", 4, True, disable_opt_rtn=False, iters=0)
    for name in ("edges", "partial", "outlier"):
        for kind in ("none", "pos", "zeros"):
            imp = importance(kind, inputs[name].shape[1], 3100)
            if imp is not None:
                tensors[f"imatrix.{kind}.{name}"] = imp
            for dname in ("float32", "bfloat16"):
                x = add_input(name, dname)
                gs = calculate_gparam(x, 16)
                with torch.no_grad():
                    qdq, scale, _ = fn(
                        x.clone(),
                        bits=4,
                        group_size=16,
                        v=0,
                        global_scale=gs,
                        data_type=resolved,
                        imatrix=imp,
                    )
                record(
                    f"opt_rtn_nv_fp.{kind}.{name}.{dname}",
                    x,
                    qdq,
                    scale,
                    dtype="nv_fp",
                    bits=4,
                    group_size=16,
                    input=name,
                    input_dtype=dname,
                    imatrix=kind,
                    func=fn.__name__,
                    resolved=resolved,
                    global_scale=gs.item(),
                )
    for dtype, bits in (("mx_int", 4), ("mx_fp6e3m2", 6)):
        fn, resolved = get_quant_func(dtype, bits, True, disable_opt_rtn=False, iters=0)
        x = add_input("partial", "float32")
        with torch.no_grad():
            qdq, scale, _ = fn(x.clone(), bits=bits, group_size=32, v=0, data_type=resolved, imatrix=None)
        record(
            f"opt_rtn_quirk.{dtype}.bits{bits}.partial.float32",
            x,
            qdq,
            scale,
            dtype=dtype,
            bits=bits,
            group_size=32,
            input="partial",
            input_dtype="float32",
            imatrix="none",
            func=fn.__name__,
            resolved=resolved,
        )

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "fp_qdq.safetensors")
    meta = {
        "generator": "scripts/intel/make_fp_fixture.py",
        "auto_round_version": auto_round.__version__,
        "torch_version": torch.__version__,
        "cases": json.dumps(cases),
    }
    save_file(tensors, path, metadata=meta)
    os.chmod(path, 0o644)
    print(f"wrote {len(cases)} cases, {os.path.getsize(path)} bytes -> {path}")
    for c in cases:
        print(c["key"], c["resolved"])


if __name__ == "__main__":
    main()
