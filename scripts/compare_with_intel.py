"""Format identity with Intel auto-round 0.16.1: our RTN checkpoints vs Intel's, tensor by tensor.

Usage (our venv; Intel's checkpoints made first by scripts/intel/make_rtn_checkpoints.py):

    uv run python scripts/compare_with_intel.py \
        --model ~/.cache/autoround/models/smollm2-135m-instruct \
        --intel ~/.cache/autoround-dev/intel-ckpts/smollm2 --out /tmp/ours

For each of W4A16 g128, W4A16 g64 and W2A16G64 it quantizes ``--model`` with our RTN, saves it,
and checks: the same tensor names, dtypes and shapes; bit-identical tensors; the same
quantization_config apart from version strings; and that Intel's checkpoint unpacks in autoround
to exactly our quantize-dequantized weights (Intel's qdq is checked equal to ours separately, by
tests/core/dtypes/test_int_vs_intel.py). Exits non-zero on any difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from autoround import quantize, save
from autoround.io import load_safetensors_dir
from autoround.loading import load_dense

CONFIGS = {
    "w4a16_g128": ("W4A16", {}),
    "w4a16_g64": ("W4A16", {"group_size": 64}),
    "w2a16_g64": ("W2A16G64", {}),
}
VERSION_KEYS = {"autoround_version"}


def compare_tensors(ours: dict[str, torch.Tensor], intel: dict[str, torch.Tensor]) -> list[str]:
    problems = []
    if set(ours) != set(intel):
        problems.append(
            f"names differ: only ours {sorted(set(ours) - set(intel))[:5]}, "
            f"only Intel's {sorted(set(intel) - set(ours))[:5]}"
        )
    for name in sorted(set(ours) & set(intel)):
        a, b = ours[name], intel[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"{name}: ours {a.dtype} {tuple(a.shape)}, Intel's {b.dtype} {tuple(b.shape)}")
        elif not torch.equal(a, b):
            problems.append(f"{name}: {int((a != b).sum())} of {a.numel()} values differ")
    return problems


def compare_configs(ours_dir: Path, intel_dir: Path) -> list[str]:
    problems = []
    for file in ("config.json", "quantization_config.json"):
        a, b = (json.loads((d / file).read_text()) for d in (ours_dir, intel_dir))
        qa, qb = (x.get("quantization_config", x) for x in (a, b))
        qa, qb = ({k: v for k, v in q.items() if k not in VERSION_KEYS} for q in (qa, qb))
        if qa != qb:
            problems.append(f"{file} quantization_config differs: ours {qa}, Intel's {qb}")
        if set(qa) | VERSION_KEYS != set(qb) | VERSION_KEYS:
            problems.append(f"{file}: key sets differ")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="the bf16 HF checkpoint both tools quantized"
    )
    parser.add_argument(
        "--intel", type=Path, required=True, help="dir with Intel's w4a16_g128/ w4a16_g64/ w2a16_g64/"
    )
    parser.add_argument("--out", type=Path, required=True, help="where to write our checkpoints")
    args = parser.parse_args()
    failed = False
    for key, (scheme, overrides) in CONFIGS.items():
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16)
        qm = quantize(model, scheme, progress=False, **overrides)
        ours_dir = save(qm, args.out / key, overwrite=True)
        intel_dir = args.intel / key
        problems = compare_tensors(load_safetensors_dir(ours_dir), load_safetensors_dir(intel_dir))
        problems += compare_configs(ours_dir, intel_dir)
        unpacked = load_dense(intel_dir).state_dict()
        diffs = [n for n, p in qm.model.state_dict().items() if not torch.equal(unpacked[n], p)]
        if diffs:
            problems.append(f"Intel's checkpoint unpacks differently from our qdq weights in {diffs[:5]}")
        n_tensors = len(load_safetensors_dir(intel_dir))
        print(
            f"{key}: {'IDENTICAL' if not problems else 'DIFFERENT'} ({n_tensors} tensors, "
            f"{len(qm.layers)} quantized layers)"
        )
        for problem in problems:
            print(f"  - {problem}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
