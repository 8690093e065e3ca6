"""QuantLinear: checkpoint-named buffers, one repack per load, replacement without dense weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoround.backends import BACKENDS
from autoround.backends.torch_backend import TorchBackend
from autoround.formats.auto_round import parse_config
from autoround.formats.gptq_layout import pack_layer
from autoround.layer_quant import quantize_weight
from autoround.nn import QuantLinear, replace_linears
from autoround.schemes import Scheme

SCHEME = Scheme(bits=4, group_size=32)


def _tensors(in_features: int = 64, out_features: int = 32) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    qdq, quant = quantize_weight(torch.randn(out_features, in_features), SCHEME)
    return pack_layer(qdq, quant, 1), qdq


class CountingBackend(TorchBackend):
    name = "counting"

    def __init__(self) -> None:
        self.prepared = 0

    def prepare(self, layer):
        self.prepared += 1
        return None


@pytest.fixture
def counting():
    backend = CountingBackend()
    BACKENDS[backend.name] = backend
    yield backend
    del BACKENDS[backend.name]


def test_state_dict_is_the_checkpoints_tensors() -> None:
    tensors, _ = _tensors()
    layer = QuantLinear(64, 32, SCHEME, 1, backend="torch")
    layer.load_state_dict(tensors)
    state = layer.state_dict()
    assert set(state) == set(tensors)
    assert all(torch.equal(state[k], v) and state[k].dtype == v.dtype for k, v in tensors.items())


def test_forward_is_x_times_w_transposed_plus_bias() -> None:
    tensors, dense = _tensors()
    tensors["bias"] = torch.randn(32).half()
    layer = QuantLinear(64, 32, SCHEME, 1, bias=True, backend="torch")
    layer.load_state_dict(tensors)
    x = torch.randn(3, 64)
    assert torch.allclose(layer(x), x @ dense.t() + tensors["bias"].float(), atol=1e-5)


def test_repacking_happens_once_per_load(counting) -> None:
    tensors, _ = _tensors()
    layer = QuantLinear(64, 32, SCHEME, 1, backend="counting")
    layer.load_state_dict(tensors)
    for _ in range(3):
        layer(torch.randn(1, 64))
    assert counting.prepared == 1
    layer.load_state_dict(tensors)
    layer(torch.randn(1, 64))
    assert counting.prepared == 2


def test_meta_layers_allocate_nothing() -> None:
    layer = QuantLinear(4096, 4096, SCHEME, 1, device="meta")
    assert all(t.is_meta for t in layer.buffers())
    assert layer.qweight.shape == (512, 4096) and layer.scales.shape == (128, 4096)


def test_unknown_backend_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'nope'.*torch"):
        QuantLinear(64, 32, SCHEME, 1, backend="nope")


def test_replace_linears_swaps_only_quantized_layers() -> None:
    model = nn.Sequential()
    model.add_module(
        "blocks", nn.ModuleList([nn.ModuleDict({"q": nn.Linear(64, 32), "k": nn.Linear(64, 32)})])
    )
    model.add_module("head", nn.Linear(32, 16))
    spec = parse_config(
        {
            "quant_method": "auto-round",
            "packing_format": "auto_round:auto_gptq",
            "bits": 4,
            "group_size": 32,
            "sym": True,
            "data_type": "int",
            "block_name_to_quantize": "blocks",
            "extra_config": {"blocks.0.k": {"bits": 16, "data_type": "fp"}},
        }
    )
    replaced = replace_linears(model, spec, backend="torch")
    assert replaced == ["blocks.0.q"]
    q = model.get_submodule("blocks.0.q")
    assert isinstance(q, QuantLinear) and q.qweight.is_meta and q.bias is not None and q.zero_offset == 1
    assert isinstance(model.get_submodule("blocks.0.k"), nn.Linear)
    assert isinstance(model.get_submodule("head"), nn.Linear)
