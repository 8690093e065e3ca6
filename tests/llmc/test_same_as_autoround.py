"""oneshot + SignRoundModifier is autoround's own SignRound: on the same rows, in the same order,
with the same knobs, it tunes every weight to the same value bit for bit (in float32: under bf16
autocast the host's recorded inputs, equal in value, may take other bf16 kernels)."""

from __future__ import annotations

import pytest
import torch

from autoround import quantize
from autoround.algorithms.signround import SignRoundSettings
from autoround_llmc import SignRoundModifier

pytestmark = pytest.mark.integration


def test_oneshot_tunes_the_same_weights_as_autoround_quantize(load_llama, run_oneshot, calibration) -> None:
    ids = torch.tensor(calibration["input_ids"])
    settings = SignRoundSettings(iters=20, batch_size=4, amp=False)
    ours = quantize(load_llama(), "W4A16", tuning=settings, calibration=ids, progress=False)
    modifier = SignRoundModifier(scheme="W4A16", iters=20, batch_size=4, ignore=["lm_head"], amp=False)
    hosted = run_oneshot(load_llama(), [modifier])

    for expected, got in zip(ours.reports, modifier.block_reports, strict=True):
        assert (got.name, got.best_iter) == (expected.name, expected.best_iter)
        assert got.rtn_loss == pytest.approx(expected.rtn_loss, rel=1e-6)
        assert got.tuned_loss == pytest.approx(expected.tuned_loss, rel=1e-6)
    tuned = hosted.state_dict()
    for name in ours.layers:
        assert torch.equal(tuned[f"{name}.weight"], ours.model.get_submodule(name).weight), name
        scale = ours.layers[name].scale.to(torch.float32)
        assert torch.equal(tuned[f"{name}.weight_scale"], scale), name
