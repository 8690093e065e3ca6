"""One quantize call on the GPU, ours or Intel auto-round 0.16.1's (see bench/signround_gpu_vs_intel.py).

Run as ``python3 _gpu_quantize_worker.py JOB.json``: loads the bf16 checkpoint onto the GPU,
times the quantize call alone (calibration ids pre-tokenized), records the peak
``torch.cuda.max_memory_allocated`` of that call, saves an ``auto_round`` checkpoint (untimed).

Intel's auto-round imports ``datasets`` at import time; the GPU machine has no ``datasets`` and
its wheels (pyarrow, pandas) do not fit a device call. Intel receives the calibration ids as a
list of tensors and never reaches ``datasets`` code then, so a stand-in module that raises on
any use lets it import (:func:`_stand_in_datasets`).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import types
from pathlib import Path


def _stand_in_datasets() -> None:
    if importlib.util.find_spec("datasets") is not None:
        return

    class _Unavailable:
        def __init__(self, *args, **kwargs) -> None:
            raise RuntimeError("datasets is not installed on this machine (a stand-in was imported)")

    module = types.ModuleType("datasets")
    module.__version__ = "0.0.0-stand-in"
    for name in ("Dataset", "Features", "IterableDataset", "Sequence", "Value"):
        setattr(module, name, type(name, (_Unavailable,), {}))
    for name in ("concatenate_datasets", "load_dataset", "load_from_disk"):
        setattr(module, name, _Unavailable)
    sys.modules["datasets"] = module


def _ours(model, tokenizer, ids, job: dict, out: Path) -> tuple[float, float]:
    from autoround import AutoRound, save

    ar = AutoRound(model, tokenizer, dataset=list(ids), device_map=job["device"], **job["recipe"])
    start = time.perf_counter()
    quantized = ar.quantize()
    measured = _synced(start)
    save(quantized, out, overwrite=True)
    return measured


def _intel(model, tokenizer, ids, job: dict, out: Path) -> tuple[float, float]:
    _stand_in_datasets()
    from auto_round import AutoRound

    dataset = [row.unsqueeze(0) for row in ids]
    ar = AutoRound(model, tokenizer, dataset=dataset, device_map=job["device"], **job["recipe"])
    start = time.perf_counter()
    ar.quantize()
    measured = _synced(start)
    ar.save_quantized(str(out), format="auto_round")
    return measured


def _synced(start: float) -> tuple[float, float]:
    """Seconds since ``start`` once the GPU is done, and the peak GiB allocated until then."""
    import torch

    if not torch.cuda.is_available():  # a smoke test on the CPU
        return time.perf_counter() - start, float("nan")
    torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = json.loads(Path(sys.argv[1]).read_text())
    model = (
        AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.bfloat16).to(job["device"]).eval()
    )
    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    ids = torch.load(job["ids_path"])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    quantize = {"ours": _ours, "intel": _intel}[job["tool"]]
    seconds, peak = quantize(model, tokenizer, ids, job, Path(job["out_dir"]))
    result = {"quantize_s": seconds, "peak_gib": peak}
    Path(job["result_path"]).write_text(json.dumps(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
