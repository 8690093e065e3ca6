"""Least-squares refinement of a searched symmetric scale: never worse, and the closed form where
the codes hold still."""

from __future__ import annotations

import pytest
import torch

from autoround.dtypes.int_refine import refine_sym_scale


def _error(w: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, imp: torch.Tensor) -> torch.Tensor:
    return ((codes * scale - w) ** 2 * imp).sum(-1)


def _searched(w: torch.Tensor, bits: int, shrink: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A plain max-based scale (fp16-exact), shrunk a little, and the nearest codes for it."""
    nmax = 2 ** (bits - 1)
    scale = (-w.abs().amax(-1, keepdim=True) * shrink / nmax).half().float()
    return (w / scale).round().clamp(-nmax, nmax - 1), scale


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_no_group_ends_worse_than_its_fp16_start_and_some_end_better(bits: int) -> None:
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(200, 64, generator=gen) * 0.02
    imp = torch.rand(200, 64, generator=gen) ** 3
    codes, scale = _searched(w, bits, 0.9)
    start = _error(w, codes, scale.half().float(), imp)
    new_codes, new_scale = refine_sym_scale(w, codes, scale, bits, imp)
    after = _error(w, new_codes, new_scale, imp)
    assert bool((after <= start * (1 + 1e-6)).all())
    assert int((after < start * (1 - 1e-4)).sum()) > 20
    nmax = 2 ** (bits - 1)
    assert bool((new_codes >= -nmax).all()) and bool((new_codes <= nmax - 1).all())
    assert torch.equal(new_codes, (w / new_scale).round().clamp(-nmax, nmax - 1))


def test_scale_is_the_weighted_least_squares_fit_when_codes_hold_still() -> None:
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(-8, 8, (16, 32), generator=gen).float()
    true_scale = torch.rand(16, 1, generator=gen) * 0.01 + 0.001
    w = codes * true_scale + torch.randn(16, 32, generator=gen) * 1e-6
    imp = torch.rand(16, 32, generator=gen) + 0.1
    _, scale = refine_sym_scale(w, codes, true_scale * 1.02, 4, imp, steps=1)
    fit = (imp * w * codes).sum(-1, keepdim=True) / (imp * codes * codes).sum(-1, keepdim=True)
    assert torch.equal(scale, fit.half().float())


def test_scale_comes_back_fp16_exact_and_zero_steps_only_round_it() -> None:
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(8, 16, generator=gen)
    codes, scale = _searched(w, 4, 1.0)
    _, refined = refine_sym_scale(w, codes, scale, 4)
    assert torch.equal(refined, refined.half().float())
    same_codes, rounded = refine_sym_scale(w, codes, scale, 4, steps=0)
    assert torch.equal(rounded, scale.half().float()) and torch.equal(same_codes, codes)


def test_an_all_zero_group_keeps_its_scale_without_nan() -> None:
    w = torch.zeros(2, 8)
    w[1] = torch.linspace(-1, 1, 8)
    _, scale = _searched(w, 4, 1.0)
    scale[0] = 1e-5  # what the search's magnitude clamp leaves an all-zero group
    codes = (w / scale).round().clamp(-8, 7)
    new_codes, new_scale = refine_sym_scale(w, codes, scale, 4)
    assert bool(torch.isfinite(new_scale).all()) and new_scale[0].item() == pytest.approx(1e-5, rel=1e-2)
    assert bool((new_codes[0] == 0).all())


def test_negative_steps_are_refused() -> None:
    w = torch.ones(1, 4)
    with pytest.raises(ValueError, match="steps must be >= 0, got -1"):
        refine_sym_scale(w, w, torch.ones(1, 1), 4, steps=-1)
