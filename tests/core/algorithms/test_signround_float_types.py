"""SignRound on the float weight types (FP8, MX floats and integers, NVFP4), end to end: a few
iterations on the tiny llama reconstruct each block better than round-to-nearest does, and the
tuned weights differ from RTN's; untrained wrappers are exactly RTN (or optimized RTN, from a
searched start)."""

from __future__ import annotations

import pytest
import torch

from autoround import AutoRound, quantize
from autoround.algorithms.signround import SignRoundSettings, TunedLinear
from autoround.dtypes import DTYPES, to_groups
from autoround.layer_quant import quantize_weight
from autoround.schemes import PRESETS, Scheme

#: Intel's float presets in their weight-only form (act_bits=16).
FLOAT_SCHEMES = {
    name: PRESETS[name].replace(act_bits=16)
    for name in ("MXFP4", "MXFP8", "NVFP4", "FPW8A16", "MXINT4", "MXFP4_RCEIL")
}
ITERS = 10
#: MXINT4's first steps (lr 1/iters on offsets and on the factor that sets the power-of-two
#: scale) overshoot; it needs more of them to come out ahead of RTN on the first block.
ITERS_FOR = {"MXINT4": 20}
#: Every sample in every step: each iteration's loss is then the one the report measures on (its
#: first batch), so keeping the best iteration can only improve on RTN's.
BATCH = 8


@pytest.fixture
def calibration() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(0, 128, (8, 32))


def _layer_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("proj.weight")}


@pytest.mark.parametrize(
    ("name", "alg_ext"),
    # the default (enable_alg_ext) for every scheme, and Intel's classic start for the types
    # whose default starts from a searched scale
    [(name, True) for name in FLOAT_SCHEMES] + [("MXFP4", False), ("NVFP4", False)],
)
def test_tuning_beats_rtn_and_moves_the_weights(make_llama, calibration, name: str, alg_ext: bool) -> None:
    scheme = FLOAT_SCHEMES[name]
    settings = SignRoundSettings(iters=ITERS_FOR.get(name, ITERS), batch_size=BATCH, enable_alg_ext=alg_ext)
    tuned = quantize(make_llama(), scheme, tuning=settings, calibration=calibration, progress=False)
    assert [r.name for r in tuned.reports] == ["model.layers.0", "model.layers.1"]
    for report in tuned.reports:
        assert not report.fell_back_to_rtn, report
        assert report.tuned_loss < report.rtn_loss, report
    rtn = quantize(make_llama(), scheme, progress=False)
    rtn_weights, tuned_weights = _layer_weights(rtn.model), _layer_weights(tuned.model)
    assert any(not torch.equal(rtn_weights[n], w) for n, w in tuned_weights.items())


@pytest.mark.parametrize("name", ["MXFP4", "NVFP4"])
def test_intels_api_tunes_the_weight_only_form(make_llama, calibration, name: str) -> None:
    rounder = AutoRound(
        make_llama(),
        None,
        scheme=name,
        act_bits=16,
        dataset=list(calibration),
        iters=ITERS,
        nsamples=8,
        seqlen=32,
        batch_size=BATCH,
    )
    qm = rounder.quantize()
    assert len(qm.reports) == 2 and all(r.tuned_loss < r.rtn_loss for r in qm.reports)


@pytest.mark.parametrize("name", list(FLOAT_SCHEMES))
def test_the_untrained_wrapper_is_exactly_rtn(tiny_llama, name: str) -> None:
    scheme = FLOAT_SCHEMES[name]
    linear = tiny_llama.model.layers[0].mlp.down_proj
    tuned = TunedLinear(linear, scheme, tune_minmax=True)
    expected, _ = quantize_weight(linear.weight.detach(), scheme)
    assert torch.equal(tuned.qdq_weight(), expected)


@pytest.mark.parametrize("name", ["MXFP4", "NVFP4"])
def test_the_untrained_wrapper_from_a_searched_start_is_optimized_rtn(tiny_llama, name: str) -> None:
    scheme: Scheme = FLOAT_SCHEMES[name]
    dtype = DTYPES[scheme.data_type]
    linear = tiny_llama.model.layers[0].mlp.down_proj
    grouped, _ = to_groups(linear.weight.detach(), scheme.group_size)
    base = dtype.searched_scale(grouped, scheme.bits, scheme.group_size, None)
    tuned = TunedLinear(linear, scheme, tune_minmax=True, base_scale=base)
    expected, _ = dtype.opt_rtn_qdq(
        grouped, scheme.bits, True, scheme.group_size, None, True, 0, torch.float32
    )
    assert torch.equal(tuned.qdq_weight(), expected.reshape(linear.weight.shape))
    # the factor on a searched start is tuned; min_scale is not (symmetric floats)
    assert tuned.max_scale.requires_grad and not tuned.min_scale.requires_grad
