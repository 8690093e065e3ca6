"""Run by test_resume.py and test_low_cpu_mem.py in a subprocess: tune a tiny model into OUT
(killable mid-run). ``--low_cpu_mem_usage=1`` (or ``=0``) passes the model as its directory with
that setting (loaded block by block, or whole)."""

import sys

import torch
from transformers import AutoModelForCausalLM

from autoround import AutoRound

model_dir, out_dir = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
low = next((a.split("=")[1] for a in sys.argv[3:] if a.startswith("--low_cpu_mem_usage=")), None)
if low is None:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    extra = {}
else:
    model, extra = model_dir, {"low_cpu_mem_usage": low == "1"}
calibration = [torch.arange(i, i + 32) % 128 for i in range(8)]
AutoRound(
    model,
    None,
    scheme="W4A16",
    group_size=32,
    dataset=calibration,
    iters=12,
    nsamples=8,
    seqlen=32,
    batch_size=4,
    **extra,
).quantize_and_save(out_dir)
