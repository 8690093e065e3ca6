"""What a decoder block receives in the pipeline is recorded as autoround's own capture would
record it for the same model."""

from __future__ import annotations

import pytest
import torch

from autoround_llmc.inputs import RecordedInputs

SEQ = 5


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(allowed.shape)
    return mask.masked_fill(~allowed, torch.finfo(torch.float32).min)


def _causal() -> torch.Tensor:
    return torch.ones(SEQ, SEQ, dtype=torch.bool).tril()[None, None]


def _recorded(mask: torch.Tensor, sdpa: bool) -> object:
    rec = RecordedInputs(sdpa=sdpa)
    rec.add("model.layers.0", (torch.zeros(1, SEQ, 8),), {"attention_mask": mask})
    return rec.kwargs["attention_mask"]


@pytest.mark.parametrize("mask", [_causal(), _additive(_causal())], ids=["bool", "additive"])
def test_an_exactly_causal_mask_of_an_sdpa_model_is_recorded_as_none(mask) -> None:
    assert _recorded(mask, sdpa=True) is None


def test_an_eager_model_keeps_its_causal_mask() -> None:
    mask = _additive(_causal())
    assert torch.equal(_recorded(mask, sdpa=False), mask)


def test_a_mask_that_hides_a_padded_key_is_kept() -> None:
    allowed = _causal().clone()
    allowed[..., 0] = False  # the first token is padding
    mask = _additive(allowed)
    assert torch.equal(_recorded(mask, sdpa=True), mask)


def test_a_mask_that_only_damps_scores_is_kept() -> None:
    mask = _additive(_causal()).clamp(min=-1.0)  # an additive bias, not a mask
    assert torch.equal(_recorded(mask, sdpa=True), mask)
