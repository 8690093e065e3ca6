"""Intel auto-round 0.16.1's ``auto_round`` exports of the tiny dense Llama with INTEGER dynamic
activations, which its ``auto_round`` export writes in packing ``auto_round:fake``: INT8_W8A8
(int 8-bit symmetric per-channel weights, int8 per-token dynamic activations) and INT4 (the same
at 4 bits, W4A4), RTN. Each Linear's ``weight`` is the quantize-dequantized weight in the model's
dtype (``FakeFormat.save_quantized``: ``model.save_pretrained``, then every shard rewritten by
``safetensors.torch.save_file`` without header metadata); no ``quantization_config.json``.
Intel's ``INT8`` preset is INT8_W8A8 under another name (files identical, checked when these were
made): not kept. The references of tests/core/formats/test_fake_act_exports.py,
tests/hf/test_fake_act_checkpoints.py and tests/vllm/test_vllm_fake_acts.py.

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    V=${AUTOROUND_INTEL_VENV:-$HOME/.cache/autoround-dev/intel-venv}
    $V/bin/python scripts/intel/make_fake_act_exports.py [--out tests/fixtures/intel] [--only NAME ...]

Reads  OUT/tiny_llama_dense/ (scripts/intel/make_tiny_fixture.py)
Writes OUT/exports/<name>/ for each entry of FIXTURES (the static-activation script's machinery:
       config.json, model.safetensors, reference.safetensors with ``in_memory_logits`` /
       ``in_memory_greedy`` of Intel's in-memory model, its ``WrapperWALayer`` quantizing each
       layer's input, and ``loaded_*`` of Intel's own loader, ``FakeActQuantLinear``;
       reference.json records the call and versions).
"""

from __future__ import annotations

import os
import sys

# the export, run and record machinery is the static-activation script's (run from any directory)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_static_act_exports import DATA, main

#: name -> (format, AutoRound keywords).
FIXTURES = {
    "ar_int8_w8a8": ("auto_round", {"scheme": "INT8_W8A8", **DATA}),
    "ar_int4_w4a4": ("auto_round", {"scheme": "INT4", **DATA}),
}

if __name__ == "__main__":
    main(FIXTURES, generator="scripts/intel/make_fake_act_exports.py")
