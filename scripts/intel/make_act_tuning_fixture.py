"""Generate Intel auto-round 0.16.1 references for activation quantization *during SignRound
tuning*: the values and the input gradient of the activation function Intel's ``WrapperLinear``
applies in the tuned block's forward (W8A8: INT8_W8A8, FP8 dynamic per token).

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    ~/.cache/autoround-dev/intel-venv/bin/python scripts/intel/make_act_tuning_fixture.py \
        [--out tests/fixtures/intel]

Writes ``act_tuning.safetensors`` into ``--out`` (resolved functions and versions in its
metadata).

What it calls: the function ``WrapperLinear._init_tuning_params_and_quant_func`` resolves while
tuning (``get_quant_func(act_data_type, act_bits, act_sym, disable_opt_rtn=True, iters=200)``:
``int_sym`` for ``"int"``, ``fp8`` (``quant_fp8_sym``) for ``"fp"``; with ``iters=0`` it would be the
round-to-nearest ``rtn_int_sym`` of make_act_fixture.py), called as ``WrapperLinear._qdq_act``
calls it: ``fn(x, bits=8, group_size=-1, scale_dtype=float16, q_scale_thresh=1e-5,
data_type=<resolved>, tensor_max=None, max_scale=tensor(1.0), min_scale=tensor(1.0),
global_scale=None)``; then ``qdq.backward(upstream)``.

* Input ``in`` (3, 7, 64) float32 seeded ``randn``, upstream gradient ``upstream`` of the same
  shape (another seed).

Tensor keys: ``in``, ``upstream``; ``<kind>.qdq`` and ``<kind>.grad`` (d loss / d in) for
``<kind>`` ``int8`` and ``fp8``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import auto_round
import torch
from auto_round.data_type.utils import get_quant_func
from safetensors.torch import save_file

KINDS = {"int8": "int", "fp8": "fp"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/intel"))
    args = parser.parse_args()
    base = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(0))
    upstream = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(1))
    tensors: dict[str, torch.Tensor] = {"in": base.clone(), "upstream": upstream.clone()}
    resolved = {}
    for kind, data_type in KINDS.items():
        fn, name = get_quant_func(data_type, 8, True, disable_opt_rtn=True, iters=200)
        resolved[kind] = name
        x = base.clone().requires_grad_()
        qdq, _, _ = fn(
            x,
            bits=8,
            group_size=-1,
            scale_dtype=torch.float16,
            q_scale_thresh=1e-5,
            data_type=name,
            tensor_max=None,
            max_scale=torch.tensor(1.0),
            min_scale=torch.tensor(1.0),
            global_scale=None,
        )
        qdq.backward(upstream)
        tensors[f"{kind}.qdq"] = qdq.detach().contiguous()
        tensors[f"{kind}.grad"] = x.grad.contiguous()
    meta = {
        "auto_round": auto_round.__version__,
        "torch": torch.__version__,
        "functions": json.dumps(resolved),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out / "act_tuning.safetensors"), metadata=meta)
    print(f"wrote {args.out / 'act_tuning.safetensors'}: {resolved}")


if __name__ == "__main__":
    main()
