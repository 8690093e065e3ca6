"""Run by test_resume.py in a subprocess: tune a tiny model into OUT (killable mid-run)."""

import sys

import torch
from transformers import AutoModelForCausalLM

from autoround import AutoRound

model_dir, out_dir = sys.argv[1], sys.argv[2]
torch.set_num_threads(1)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
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
).quantize_and_save(out_dir)
