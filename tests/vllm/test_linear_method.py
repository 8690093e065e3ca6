"""The engine-neutral linear method, with stand-ins for the engine's parameter classes.

The stand-ins take the same constructor arguments as vLLM's (and SGLang's) classes, so this
checks the shapes and dtypes we register, and that the product over the loaded tensors is the
dense quantize-dequantized layer's. The engines' own loaders run in ``test_vllm_serving.py``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoround.formats.auto_round import ZERO_OFFSET, packing_format_for
from autoround.formats.gptq_layout import pack_layer
from autoround.layer_quant import quantize_weight
from autoround.schemes import Scheme
from autoround_vllm.linear_method import CORE_LAYER, PackedLinearLogic, ParameterKinds
from autoround_vllm.sharding import ShardingError


class StandIn(nn.Parameter):
    """Records the keyword arguments an engine parameter class is built with."""

    def __new__(cls, data: torch.Tensor, **kwargs):
        return super().__new__(cls, data, requires_grad=False)

    def __init__(self, data: torch.Tensor, **kwargs):
        self.attrs = kwargs


class Packed(StandIn): ...


class PackedColumn(StandIn): ...


class GroupScale(StandIn): ...


class ChannelScale(StandIn): ...


class Method(PackedLinearLogic):
    kinds = ParameterKinds(Packed, PackedColumn, GroupScale, ChannelScale)


def quantized(out_features: int, in_features: int, scheme: Scheme, seed: int = 0):
    torch.manual_seed(seed)
    weight = torch.randn(out_features, in_features) * 0.05
    qdq, quant = quantize_weight(weight, scheme)
    return qdq, pack_layer(qdq, quant, ZERO_OFFSET[packing_format_for(scheme)])


@pytest.mark.parametrize(
    "scheme",
    [
        Scheme(bits=4, group_size=128),
        Scheme(bits=2, group_size=64),
        Scheme(bits=3, group_size=128, sym=False),
    ],
)
def test_fused_qkv_matches_dense(scheme):
    parts = [quantized(n, 576, scheme, seed=i) for i, n in enumerate((576, 192, 192))]
    method = Method(scheme, ZERO_OFFSET[packing_format_for(scheme)], "model.layers.0.self_attn.qkv_proj")
    layer = nn.Module()
    method.create_weights(layer, 576, [576, 192, 192], 576, 960, torch.bfloat16, weight_loader=None)
    assert isinstance(layer.qweight, Packed) and layer.qweight.attrs["packed_dim"] == 0
    assert isinstance(layer.scales, GroupScale) and layer.scales.dtype == torch.float16
    assert layer.scales.shape == (scheme.num_groups(576), 960)  # 5 at group 128: the last one partial
    for key in ("qweight", "qzeros", "scales"):  # what the engine's qkv loader does, part by part
        getattr(layer, key).data.copy_(torch.cat([p[1][key] for p in parts], dim=1))
    method.process_weights_after_loading(layer)
    x = torch.randn(3, 576)
    dense = torch.cat([p[0] for p in parts])
    expected = x @ dense.t()
    got = method.apply(layer, x.bfloat16(), bias=torch.ones(960, dtype=torch.bfloat16)).float() - 1
    assert getattr(layer, CORE_LAYER).backend == "cpu"
    torch.testing.assert_close(got, expected, atol=0.05, rtol=0.05)


def test_row_parallel_per_channel_uses_channel_classes():
    method = Method(Scheme(bits=4, group_size=-1), 1, "model.layers.0.self_attn.o_proj")
    layer = nn.Module()
    method.create_weights(layer, 288, [576], 576, 576, torch.bfloat16, weight_loader=None)
    assert isinstance(layer.scales, ChannelScale) and isinstance(layer.qzeros, PackedColumn)
    assert layer.scales.shape == (1, 576)


def test_unshardable_layer_named():
    method = Method(Scheme(bits=4, group_size=128), 1, "model.layers.3.self_attn.o_proj")
    with pytest.raises(ShardingError, match=r"model\.layers\.3\.self_attn\.o_proj"):
        method.create_weights(nn.Module(), 288, [576], 576, 576, torch.bfloat16, weight_loader=None)
