"""Record, or check, the sha256 of every file of a fixed set of tiny checkpoints.

A restructuring that should change no behaviour (issue "One path through the code") is checked
with this: record before, check after. Usage::

    uv run python scripts/checkpoint_hashes.py record [--out docs/checkpoint_hashes.json]
    uv run python scripts/checkpoint_hashes.py check  [--out docs/checkpoint_hashes.json]

The runs: a tiny llama and a tiny Qwen3-MoE (the test suite's models, seeded), each with RTN,
optimized RTN and SignRound (4 iterations on seeded random calibration ids); sym and asym;
2/3/4/8 bits; a mixed ``layer_config``. Float results may differ between CPUs (AVX2, AVX512,
AMX kernels sum in other orders), so hashes are recorded per CPU: ``check`` compares with the
record of this CPU and says so when there is none. Exit code 1 when any hash differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the suite's tiny models, one definition of them

from tiny_models import TINY_LLAMA, TINY_QWEN3_MOE, build_model  # noqa: E402
from transformers import LlamaConfig, Qwen3MoeConfig  # noqa: E402

import autoround  # noqa: E402
from autoround.hardware import native_bf16  # noqa: E402

DEFAULT_RECORD = ROOT / "docs" / "checkpoint_hashes.json"
MODELS = {
    "llama": lambda: build_model(LlamaConfig(**TINY_LLAMA)),
    "moe": lambda: build_model(Qwen3MoeConfig(**TINY_QWEN3_MOE)),
}
#: run name -> quantize() arguments (the scheme first).
RUNS: dict[str, dict[str, Any]] = {
    "rtn_w4": {"scheme": "W4A16"},
    "rtn_w4_asym": {"scheme": "W4A16", "sym": False},
    "rtn_w2_g32": {"scheme": "W2A16G32"},
    "rtn_w3_g64_asym": {"scheme": "W3A16G64", "sym": False},
    "rtn_w8": {"scheme": "W8A16"},
    "rtn_mixed": {
        "scheme": "W4A16",
        "layer_config": {"down_proj": {"bits": 8}, "self_attn.o_proj": "W2A16G32"},
    },
    "opt_rtn_w4": {"scheme": "W4A16", "opt_rtn": True, "calibrated": True},
    "opt_rtn_w3_g32": {"scheme": "W3A16G32", "opt_rtn": True, "calibrated": True},
    "signround_w4": {"scheme": "W4A16", "iters": 4, "calibrated": True},
    "signround_w4_asym": {"scheme": "W4A16", "sym": False, "iters": 4, "calibrated": True},
    "signround_w2_g64": {"scheme": "W2A16G64", "iters": 4, "calibrated": True},
    "signround_mixed": {
        "scheme": "W4A16",
        "iters": 4,
        "calibrated": True,
        "layer_config": {"down_proj": {"bits": 8}},
    },
}


def cpu_key() -> str:
    """Which float results to expect: the ISA torch dispatches to, and whether bf16 is native."""
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{capability}{'-bf16' if native_bf16('cpu') else ''}"


def _calibration() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, TINY_LLAMA["vocab_size"], (4, 32), generator=generator)


def run_hashes(model_name: str, run: str, workdir: Path) -> dict[str, str]:
    """sha256 of each file of the checkpoint one run writes."""
    kwargs = dict(RUNS[run])
    scheme = kwargs.pop("scheme")
    if kwargs.pop("calibrated", False):
        kwargs["calibration"] = _calibration()
    torch.manual_seed(0)
    qm = autoround.quantize(MODELS[model_name](), scheme, progress=False, **kwargs)
    path = autoround.save(qm, workdir / f"{model_name}-{run}")
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir()) if f.is_file()}


def all_hashes() -> dict[str, dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        return {f"{model}/{run}": run_hashes(model, run, Path(tmp)) for model in MODELS for run in RUNS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("action", choices=["record", "check"])
    parser.add_argument("--out", type=Path, default=DEFAULT_RECORD, help="the record (JSON)")
    args = parser.parse_args(argv)
    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    key, hashes = cpu_key(), all_hashes()
    if args.action == "record":
        record[key] = hashes
        args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(hashes)} checkpoints for CPU {key} in {args.out}")
        return 0
    if key not in record:
        print(f"no record for CPU {key} in {args.out} (recorded: {sorted(record)}); record one first")
        return 1
    differ = sorted(name for name in hashes if hashes[name] != record[key].get(name))
    for name in differ:
        files = [f for f in hashes[name] if hashes[name][f] != record[key].get(name, {}).get(f)]
        print(f"DIFFERS {name}: {files}")
    print(f"{len(hashes) - len(differ)}/{len(hashes)} checkpoints identical to the record for CPU {key}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
