"""Intel auto-round 0.16.1's ``auto_round`` exports of the tiny dense Llama with DYNAMIC activations:
MXFP4 / MXFP8 W4A4 / W8A8 (MX activations per block of 32, floor and RCEIL exponents), MXINT4
W4A4 (``mx_int`` 4-bit weights and activations per block of 32, packing ``auto_round``) and its
weight-only form (``act_bits=16``: ``ar_mxint4_w4a16``; Intel's own loader fails on it, recorded), FP8
per-channel weights with per-token dynamic FP8 activations (``activation_scheme: dynamic``) and
FP8_BLOCK (128x128 weight tiles, per-group-128 dynamic FP8 activations), RTN; with Intel's own
logits of its in-memory model. Intel's ``auto_round`` export refuses FP8 per-token dynamic
activations ("AutoRound format does not support exporting for the current quantization
configuration"): ``ar_fp8_dynamic`` holds only that refusal (reference.json). The references of
tests/core/formats/test_dynamic_act_exports.py and tests/hf/test_dynamic_act_checkpoints.py.
``--only`` remakes the named fixtures alone (the MXINT4 ones were added with
``--only ar_mxint4 ar_mxint4_w4a16``, the others left as they were).

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    V=${AUTOROUND_INTEL_VENV:-$HOME/.cache/autoround-dev/intel-venv}
    $V/bin/python scripts/intel/make_dynamic_act_exports.py [--out tests/fixtures/intel] [--only NAME ...]

Reads  OUT/tiny_llama_dense/ (scripts/intel/make_tiny_fixture.py)
Writes OUT/exports/<name>/ for each entry of FIXTURES: AutoRound(dense, **kwargs, iters=0,
       disable_opt_rtn=True, device_map="cpu", disable_model_free=True, dataset=a local text)
       .quantize_and_save(format=...), keeping config.json, quantization_config.json (if any) and
       model.safetensors; plus reference.safetensors: ``act_max.<layer>`` (the calibrated largest
       |input| Intel's in-memory layer holds after quantizing, float32), ``in_memory_logits`` of
       INPUT_IDS and NEW_TOKENS ``in_memory_greedy`` tokens of Intel's in-memory quantized model
       (its activations quantized as its ``WrapperWALayer`` does), and ``loaded_*`` of Intel's own
       loader reading the checkpoint where it can; reference.json records the call and versions.
"""

from __future__ import annotations

import os
import sys

# the export, run and record machinery is the static-activation script's (run from any directory)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_static_act_exports import DATA, main

#: name -> (format, AutoRound keywords).
FIXTURES = {
    "ar_mxfp4_w4a4": ("auto_round", {"scheme": "MXFP4", **DATA}),
    "ar_mxfp8_w8a8": ("auto_round", {"scheme": "MXFP8", **DATA}),
    "ar_mxfp4_rceil": ("auto_round", {"scheme": "MXFP4_RCEIL", **DATA}),
    "ar_mxfp8_rceil": ("auto_round", {"scheme": "MXFP8_RCEIL", **DATA}),
    "ar_fp8_dynamic": (
        "auto_round",
        {"scheme": "FP8_STATIC", "act_dynamic": True, "act_group_size": -1, **DATA},
    ),
    "ar_fp8_block": ("auto_round", {"scheme": "FP8_BLOCK", **DATA}),
    "ar_mxint4": ("auto_round", {"scheme": "MXINT4", **DATA}),
    "ar_mxint4_w4a16": ("auto_round", {"scheme": "MXINT4", "act_bits": 16, **DATA}),
}

if __name__ == "__main__":
    main(FIXTURES, generator="scripts/intel/make_dynamic_act_exports.py")
