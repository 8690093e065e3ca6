"""The in-memory hooks of the calibrated activation kinds: a layer quantizes its input with the
stored range (static FP8's scale absmax / 448, written out in plain torch here), and a layer
without one is refused by name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoround.nn.act_hooks import act_kind_of, attach_act_quant, detach_act_quant, hook_for
from autoround.schemes import PRESETS


def _fp8_static(x: torch.Tensor, absmax: float) -> torch.Tensor:
    scale = torch.tensor(absmax, dtype=torch.float32) / 448.0  # divided in float32
    return (x / scale).clamp(-448, 448).to(torch.float8_e4m3fn).to(torch.float32) * scale


def test_a_calibrated_layer_quantizes_its_input_with_the_stored_range() -> None:
    model = nn.Sequential(nn.Linear(64, 8, bias=False))
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    absmax = 0.5 * x.abs().max()  # narrower than this input: its largest values clip
    assert attach_act_quant(model, {"0": PRESETS["FP8_STATIC"]}, {"0": absmax}) == 1
    assert act_kind_of(model[0]) == "fp8_static"
    with torch.no_grad():
        expected = nn.functional.linear(_fp8_static(x, absmax.item()), model[0].weight)
        assert torch.equal(model(x), expected)
        # the range is the stored one, not this input's own
        own = nn.functional.linear(_fp8_static(x, x.abs().max().item()), model[0].weight)
        assert not torch.equal(model(x), own)
    assert detach_act_quant(model) == 1


def test_a_calibrated_layer_without_its_range_is_refused_by_name() -> None:
    model = nn.Sequential(nn.Linear(64, 8))
    with pytest.raises(ValueError, match=r"layer 0: .*calibrated range \(input_absmax\)"):
        attach_act_quant(model, {"0": PRESETS["NVFP4"]})
    with pytest.raises(ValueError, match="needs its calibrated input range"):
        hook_for(PRESETS["FP8_STATIC"])
    with pytest.raises(ValueError, match="takes no calibrated range"):
        hook_for(PRESETS["INT8_W8A8"], torch.tensor(1.0))
    hook = hook_for(PRESETS["NVFP4"], torch.tensor(3.0))
    assert hook is not None and repr(hook) == "ActQuantHook('nvfp4', absmax=3)"
