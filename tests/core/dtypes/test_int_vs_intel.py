"""Our integer qdq reproduces Intel auto-round 0.16.1 bit for bit.

The fixture holds Intel's outputs on seeded inputs; ``scripts/intel/make_qdq_fixture.py`` made it
(inside a separate venv with Intel's package; we never import it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from autoround.dtypes import DTYPES, from_groups, to_groups

FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel"
CASES = json.loads((FIXTURE / "int_qdq.json").read_text())["cases"]
TENSORS = load_file(FIXTURE / "int_qdq.safetensors")
# Cases with a non-default scale dtype exercise an Intel option we do not expose.
SUPPORTED = [c for c in CASES if not c["args"]]


@pytest.mark.parametrize("case", SUPPORTED, ids=[c["id"] for c in SUPPORTED])
def test_qdq_scale_and_zero_equal_intels(case: dict) -> None:
    weight = TENSORS[case["input"]]
    tunables = {name: TENSORS[f"{case['id']}.{name}"] for name in case["tensor_args"]}
    grouped, layout = to_groups(weight, case["group_size"])
    sym = case["func"] != "int_asym"
    qdq, qp = DTYPES["int"].qdq(grouped, case["bits"], sym, **tunables)
    assert torch.equal(from_groups(qdq, layout), TENSORS[f"{case['id']}.qdq"])
    assert torch.equal(qp.scale, TENSORS[f"{case['id']}.scale"].reshape(qp.scale.shape))
    intel_zero = TENSORS[f"{case['id']}.zp"]
    assert torch.equal(qp.zero, intel_zero.to(qp.zero.dtype).expand_as(qp.zero))


def test_the_fixture_covers_every_bit_width_both_dtypes_and_tunables() -> None:
    covered = {(c["bits"], c["input_dtype"], c["func"]) for c in SUPPORTED}
    for bits in (2, 3, 4, 8):
        for dtype in ("float32", "bfloat16"):
            assert (bits, dtype, "int_sym") in covered and (bits, dtype, "int_asym") in covered
    assert any(c["tensor_args"] for c in SUPPORTED)
