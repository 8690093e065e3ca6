"""Generate Intel auto-round 0.16.1's NVFP4 quantize-dequantize of fused layers (q/k/v and
gate/up sharing one global scale).

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    ~/.cache/autoround-dev/intel-venv/bin/python scripts/intel/make_fused_gs_fixture.py \
        [--out tests/fixtures/intel]

Writes ``fused_gs.safetensors`` into ``--out`` (versions in its metadata).

The weights are those of a decoder block of the small llama the test builds (hidden 32: q/k/v 32x32,
gate/up 64x32), seeded ``randn * 0.05`` and scaled per layer so that every member of a
group has a different max|W| (k largest of q/k/v, up largest of gate/up), float32. The block is
given Intel's per-layer attributes (``bits=4``, ``group_size=16``, ``data_type="nv_fp"``), then
``auto_round.data_type.utils.update_block_global_scale_if_needed(block, "nv_fp", 16)`` sets each
layer's ``weight_global_scale`` (``calculate_gparam``, then the smallest of each group's:
``update_fused_layer_global_scales``), and each weight is quantized as ``WrapperLinear`` calls
the data type with it:

* plain RTN: ``get_quant_func("nv_fp", 4, True, disable_opt_rtn=True, iters=0)`` (``nv_fp4``),
  ``fn(w, bits=4, group_size=16, v=0, max_scale=1.0, global_scale=gs, data_type="nv_fp")``;
* optimized RTN: ``get_quant_func("nv_fp", 4, True, disable_opt_rtn=False, iters=0)``
  (``opt_rtn_nv_fp4``), ``fn(w, bits=4, group_size=16, v=0, global_scale=gs,
  data_type=<resolved>, imatrix=imp)`` with ``imp`` a seeded positive importance per input.

Tensor keys, per layer ``<name>`` (``self_attn.q_proj`` ...): ``weight.<name>``,
``own_gs.<name>`` (``calculate_gparam`` of the layer alone), ``gs.<name>`` (after the update),
``rtn.<name>`` and ``opt_rtn.<name>`` (the quantize-dequantized weights); ``imatrix``.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from safetensors.torch import save_file
from torch import nn

#: (name, out_features, factor on randn * 0.05): distinct max|W| within each fused group.
LAYERS = (
    ("self_attn.q_proj", 32, 1.0),
    ("self_attn.k_proj", 32, 3.0),
    ("self_attn.v_proj", 32, 0.5),
    ("mlp.gate_proj", 64, 0.7),
    ("mlp.up_proj", 64, 2.0),
)
HIDDEN = 32


def block_of_weights(seed: int) -> nn.Module:
    """A block with the layers of :data:`LAYERS` under ``self_attn`` and ``mlp``."""
    g = torch.Generator().manual_seed(seed)
    block = nn.Module()
    block.self_attn = nn.Module()
    block.mlp = nn.Module()
    for name, out_features, factor in LAYERS:
        parent, child = name.split(".")
        layer = nn.Linear(HIDDEN, out_features, bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(out_features, HIDDEN, generator=g) * 0.05 * factor)
        layer.bits, layer.group_size, layer.data_type, layer.sym = 4, 16, "nv_fp", True
        setattr(getattr(block, parent), child, layer)
    return block


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "intel")
    )
    args = ap.parse_args()

    import auto_round
    from auto_round.data_type.nvfp import calculate_gparam
    from auto_round.data_type.utils import get_quant_func, update_block_global_scale_if_needed

    block = block_of_weights(4100)
    tensors: dict[str, torch.Tensor] = {}
    for name, _, _ in LAYERS:
        weight = block.get_submodule(name).weight.detach()
        tensors[f"weight.{name}"] = weight.clone().contiguous()
        tensors[f"own_gs.{name}"] = calculate_gparam(weight, 16).reshape(())
    update_block_global_scale_if_needed(block, "nv_fp", 16)
    imp = torch.rand(HIDDEN, generator=torch.Generator().manual_seed(4101)) * 2 + 0.01
    tensors["imatrix"] = imp
    rtn_fn, rtn_resolved = get_quant_func("nv_fp", 4, True, disable_opt_rtn=True, iters=0)
    opt_fn, opt_resolved = get_quant_func("nv_fp", 4, True, disable_opt_rtn=False, iters=0)
    with torch.no_grad():
        for name, _, _ in LAYERS:
            layer = block.get_submodule(name)
            gs = layer.weight_global_scale
            tensors[f"gs.{name}"] = gs.reshape(()).clone()
            w = layer.weight.detach()
            qdq, _, _ = rtn_fn(
                w.clone(), bits=4, group_size=16, v=0, max_scale=1.0, global_scale=gs, data_type="nv_fp"
            )
            tensors[f"rtn.{name}"] = qdq.contiguous()
            qdq, _, _ = opt_fn(
                w.clone(), bits=4, group_size=16, v=0, global_scale=gs, data_type=opt_resolved, imatrix=imp
            )
            tensors[f"opt_rtn.{name}"] = qdq.contiguous()
    meta = {
        "auto_round_version": auto_round.__version__,
        "torch_version": torch.__version__,
        "functions": json.dumps({"rtn": rtn_resolved, "opt_rtn": opt_resolved}),
    }
    path = os.path.join(args.out, "fused_gs.safetensors")
    save_file(tensors, path, metadata=meta)
    print(f"wrote {path}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
