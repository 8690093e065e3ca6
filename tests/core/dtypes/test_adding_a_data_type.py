"""A data type is one module plus one registry entry: a toy type registered here is planned,
quantized by RTN and optimized RTN, and refused by SignRound, without touching other modules.

The toy ``absmax`` type is the textbook symmetric integer: ``scale = max|w| / (2**(bits-1) - 1)``
in float32, codes ``round(w / scale) + 2**(bits-1)``. It supports plain round-to-nearest only
(:class:`~autoround.dtypes.RtnOnly` answers the rest of the protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from autoround.algorithms import quantize_rtn
from autoround.algorithms.opt_rtn import importance_layers, opt_rtn_weight
from autoround.algorithms.signround import TunedLinear
from autoround.dtypes import DTYPES, DataType, QParams, RtnOnly, compose_qdq
from autoround.errors import SchemeError
from autoround.layer_plan import resolve
from autoround.layer_quant import codes_of, dequantize_codes, quantize_weight
from autoround.schemes import Scheme


@dataclass(frozen=True)
class AbsMax(RtnOnly):
    """Symmetric integers scaled by the group's largest magnitude (no full-range sign trick)."""

    name: str = "absmax"
    allowed_bits: tuple[int, ...] = (4, 8)

    def qparams(self, grouped, bits, sym, min_scale=1.0, max_scale=1.0) -> QParams:
        scale = (grouped.abs().amax(-1, keepdim=True) * max_scale / (2 ** (bits - 1) - 1)).clamp(min=1e-8)
        return QParams(scale.float(), torch.full_like(scale, 2 ** (bits - 1), dtype=torch.float32))

    def quantize(self, grouped, qp, bits, v=0.0) -> torch.Tensor:
        return (torch.round(grouped / qp.scale + v) + qp.zero).clamp(0, 2**bits - 1)

    def dequantize(self, codes, qp) -> torch.Tensor:
        return qp.scale * (codes - qp.zero)

    def qdq(self, grouped, bits, sym, v=0.0, min_scale=1.0, max_scale=1.0) -> tuple[torch.Tensor, QParams]:
        return compose_qdq(self, grouped, bits, sym, v, min_scale, max_scale)


TOY: DataType = AbsMax()  # mypy checks that the toy implements the whole protocol


@pytest.fixture
def absmax(monkeypatch) -> Scheme:
    """The toy registered (for this test only) and a 4-bit, group-32 scheme of it."""
    monkeypatch.setitem(DTYPES, "absmax", TOY)
    return Scheme(bits=4, group_size=32, sym=True, data_type="absmax")


def reference(weight: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """The toy's formula, one group at a time."""
    out = torch.empty_like(weight)
    for r in range(weight.shape[0]):
        for start in range(0, weight.shape[1], group):
            g = weight[r, start : start + group]
            scale = g.abs().max() / (2 ** (bits - 1) - 1)
            out[r, start : start + group] = scale * torch.round(g / scale)
    return out


def test_a_registered_type_is_a_valid_scheme_with_its_own_bit_widths(absmax) -> None:
    assert absmax.data_type == "absmax"
    with pytest.raises(SchemeError, match="bits=3 is not allowed for data_type 'absmax'"):
        Scheme(bits=3, data_type="absmax")


def test_an_unregistered_type_is_refused() -> None:
    with pytest.raises(SchemeError, match="unknown data_type 'absmax'"):
        Scheme(bits=4, data_type="absmax")


def test_rtn_quantizes_every_planned_layer_with_the_new_types_formula(tiny_llama, absmax) -> None:
    plan = resolve(tiny_llama, absmax)
    before = {name: tiny_llama.get_submodule(name).weight.detach().clone() for name in plan.quantized()}
    layers = quantize_rtn(tiny_llama, plan, progress=False)
    assert layers and set(layers) == set(plan.quantized())
    for name, quant in layers.items():
        weight = tiny_llama.get_submodule(name).weight.detach()
        torch.testing.assert_close(weight, reference(before[name], 4, 32), rtol=0, atol=1e-6)
        assert quant.scheme == absmax and quant.scale.shape == (weight.shape[0], quant.groups)
        assert torch.equal(dequantize_codes(codes_of(weight, quant), quant, weight.dtype), weight)


def test_optimized_rtn_falls_back_to_plain_rtn_and_collects_no_importance(tiny_llama, absmax) -> None:
    weight = tiny_llama.model.layers[0].mlp.down_proj.weight.detach()
    searched, quant = opt_rtn_weight(weight, absmax, torch.rand(weight.shape[1]))
    plain, expected = quantize_weight(weight, absmax)
    assert torch.equal(searched, plain) and torch.equal(quant.scale, expected.scale)
    assert importance_layers(resolve(tiny_llama, absmax)) == []


def test_signround_refuses_a_type_that_is_not_tunable(tiny_llama, absmax) -> None:
    with pytest.raises(ValueError, match="SignRound cannot tune data_type 'absmax'"):
        TunedLinear(tiny_llama.model.layers[0].mlp.down_proj, absmax, tune_minmax=True)
