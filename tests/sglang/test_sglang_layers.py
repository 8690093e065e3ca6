"""The layer math of our SGLang method inside SGLang's own linear layers (in the SGLang venv).

``engine/layers.py`` builds SGLang's QKV, merged gate/up and row-parallel layers with our config,
loads packed tensors through SGLang's weight loaders and compares the outputs with a plain-torch
product over the weights decoded from those tensors; every scheme the vLLM plugin serves.
"""

from __future__ import annotations

from typing import Any

import pytest
from sglang_harness import run_json

pytestmark = pytest.mark.integration

LAYERS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")
SCHEMES = [
    f"w{bits}g{group}_{sym}"
    for bits in (2, 3, 4, 8)
    for sym in ("sym", "asym")
    for group in ("128", "32", "chan")
]
#: Largest error relative to the largest output: core's ``torch`` backend computes in fp32 like
#: the reference; the CPU default (``cpu``: bf16 activations into torch's int4 op) and SGLang's
#: unquantized method (bf16 weights) round to bf16 (2^-8 relative), seen up to 7e-3.
TOLERANCE = {"torch": 1e-5, "default": 2e-2}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, Any]:
    """All cases in one SGLang process (about 15 s: SGLang's import is most of it)."""
    return run_json("layers.py", tmp=tmp_path_factory.mktemp("sglang_layers"))


@pytest.mark.parametrize("backend", ["torch", "default"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_matches_plain_torch(report, scheme, backend):
    layers = report[f"{scheme}/{backend}"]
    assert set(layers) == set(LAYERS)
    for name, seen in layers.items():
        assert seen["method"] == "AutoRoundSglangLinearMethod", (name, seen)
        assert seen["backend"] == ("torch" if backend == "torch" else "cpu"), (name, seen)
        assert seen["ref_vs_core_qdq"] == 0.0, (name, seen)  # decoded bytes = core's qdq weights
        assert seen["max_err"] <= TOLERANCE[backend] * seen["ref_scale"], (name, seen)


def test_partial_groups_and_3bit_shapes(report):
    """576 inputs at group 128: 5 groups, the last one partial; 3-bit q/k/v codes straddle words."""
    shapes = report["w3g128_asym/torch"]["self_attn.qkv_proj"]["shapes"]
    assert shapes == {"qweight": [54, 960], "qzeros": [5, 90], "scales": [5, 960]}


@pytest.mark.parametrize("backend", ["torch", "default"])
def test_mixed_schemes_per_layer(report, backend):
    """extra_config: 8-bit g64 down_proj, o_proj kept in 16 bits (SGLang's unquantized method)."""
    layers = report[f"mixed_8bit_down_16bit_o/{backend}"]
    assert layers["self_attn.o_proj"]["method"] == "UnquantizedLinearMethod"
    assert layers["mlp.down_proj"]["shapes"]["scales"] == [24, 576]  # 1536 / 64 groups, 8-bit
    assert layers["mlp.down_proj"]["shapes"]["qweight"] == [384, 576]
    for name, seen in layers.items():
        tolerance = TOLERANCE["default"] if seen["backend"] != "torch" else TOLERANCE["torch"]
        assert seen["max_err"] <= tolerance * seen["ref_scale"], (name, seen)
