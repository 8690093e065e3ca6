"""The Triton backend under ``torch.compile``: the kernel is one opaque custom op, so a whole
forward compiles into a single graph (what transformers' static-cache decode compiles), and the
compiled layer computes what the dense quantize-dequantized weight computes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", exc_type=ImportError)

from autoround.kernels.triton_op import triton_quant_matmul
from autoround.schemes import Scheme

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize(("bits", "sym"), [(4, True), (2, False), (8, True)])
def test_the_custom_op_passes_torch_opcheck(make_packed, bits, sym) -> None:
    layer, _ = make_packed(Scheme(bits=bits, group_size=32, sym=sym), 64, 48, backend="triton")
    args = (layer.qweight.to(DEVICE), layer.qzeros.to(DEVICE), layer.scales.to(DEVICE))
    x = torch.randn(3, 64, device=DEVICE)
    torch.library.opcheck(
        triton_quant_matmul,
        (x, *args, bits, 32, layer.zero_offset),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_a_compiled_layer_is_one_graph_and_matches_the_dense_weight(make_packed) -> None:
    torch._dynamo.reset()
    layer, qdq = make_packed(Scheme(bits=4, group_size=32, sym=True), 64, 48, backend="triton", bias=True)
    layer = layer.to(DEVICE)
    layer.prepare()
    x = torch.randn(2, 5, 64, device=DEVICE)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")  # fullgraph: a break raises
    out = compiled(x)
    expected = x @ qdq.to(DEVICE).T + layer.bias.float()
    assert out.shape == (2, 5, 48)
    assert float((out - expected).norm() / expected.norm()) < 1e-4
