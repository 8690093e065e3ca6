"""Token rows -> a seeded, fixed-shape :class:`CalibrationSet`."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from autoround.calibration.sources import Row


@dataclass(frozen=True)
class CalibrationSet:
    """``nsamples`` calibration samples of ``seqlen`` tokens each.

    Attributes:
        input_ids: ``(nsamples, seqlen)`` int64 token ids.
        attention_mask: same shape, or ``None`` when every token is real (text sources).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        ids = self.input_ids
        if ids.dim() != 2 or ids.dtype != torch.int64 or ids.numel() == 0:
            raise ValueError(
                f"input_ids must be a non-empty 2-D int64 tensor, got {ids.dtype} {tuple(ids.shape)}"
            )
        if self.attention_mask is not None and self.attention_mask.shape != ids.shape:
            raise ValueError(
                f"attention_mask {tuple(self.attention_mask.shape)} != input_ids {tuple(ids.shape)}"
            )

    @property
    def nsamples(self) -> int:
        return self.input_ids.shape[0]

    @property
    def seqlen(self) -> int:
        return self.input_ids.shape[1]


@dataclass
class Pool:
    """The usable ``seqlen`` rows of one source, and how many rows were dropped and why."""

    name: str
    rows: list[Row] = field(default_factory=list)
    too_short: int = 0
    degenerate: int = 0

    def describe(self, seqlen: int) -> str:
        text = f"{self.name}: {len(self.rows)} usable"
        if self.too_short:
            text += f", {self.too_short} shorter than seqlen={seqlen} dropped"
        if self.degenerate:
            text += f", {self.degenerate} mostly one repeated token (padding) dropped"
        return text


def check_sizes(nsamples: int, seqlen: int) -> None:
    if isinstance(nsamples, bool) or not isinstance(nsamples, int) or nsamples < 1:
        raise ValueError(f"nsamples must be an integer >= 1, got {nsamples!r}")
    if isinstance(seqlen, bool) or not isinstance(seqlen, int) or seqlen < 2:
        raise ValueError(f"seqlen must be an integer >= 2, got {seqlen!r}")


def fit(name: str, rows: Sequence[Row], seqlen: int, *, drop_padding: bool) -> Pool:
    """Keep the first ``seqlen`` tokens of each row; drop rows shorter than ``seqlen``.

    With ``drop_padding`` (text sources, as Intel's filter) also drop windows whose last token
    fills more than half of it: padding or a degenerate text.
    """
    pool = Pool(name)
    for ids, mask in rows:
        if ids.shape[0] < seqlen:
            pool.too_short += 1
            continue
        ids = ids[:seqlen]
        if drop_padding and seqlen > 2 and int((ids == ids[-1]).sum()) > seqlen // 2:
            pool.degenerate += 1
            continue
        pool.rows.append((ids, None if mask is None else mask[:seqlen]))
    return pool


def select(
    pools: Sequence[Pool], quotas: Sequence[int | None], nsamples: int, seqlen: int, seed: int
) -> CalibrationSet:
    """Shuffle each pool with ``random.Random(seed)``, take its quota, mix, keep ``nsamples``.

    A quota of ``None`` is an even share of what the fixed quotas leave, smallest pool first,
    a short pool's shortfall passing to the larger ones (Intel's order; Intel does not pass
    the shortfall on when fixed quotas are present). Several pools are shuffled together.

    Raises:
        ValueError: fewer usable rows than asked, saying how many and why.
    """
    rng = random.Random(seed)
    shuffled = [rng.sample(pool.rows, len(pool.rows)) for pool in pools]
    counts = _allocate([len(rows) for rows in shuffled], quotas, nsamples)
    for pool, rows, count in zip(pools, shuffled, counts, strict=True):
        if count > len(rows):
            raise ValueError(_shortage(pools, nsamples, seqlen, f"num={count} asked of {pool.name}"))
    chosen = [row for rows, count in zip(shuffled, counts, strict=True) for row in rows[:count]]
    if len(pools) > 1:
        rng.shuffle(chosen)
    if len(chosen) < nsamples:
        raise ValueError(_shortage(pools, nsamples, seqlen, f"found {len(chosen)} samples"))
    chosen = chosen[:nsamples]
    ids = torch.stack([row[0] for row in chosen])
    if all(mask is None for _, mask in chosen):
        return CalibrationSet(ids)
    masks = [torch.ones(seqlen, dtype=torch.int64) if mask is None else mask for _, mask in chosen]
    return CalibrationSet(ids, torch.stack(masks))


def _allocate(sizes: Sequence[int], quotas: Sequence[int | None], nsamples: int) -> list[int]:
    counts = [quota or 0 for quota in quotas]
    free = sorted(
        (size, i) for i, (size, quota) in enumerate(zip(sizes, quotas, strict=True)) if quota is None
    )
    left = max(nsamples - sum(counts), 0)
    for done, (size, i) in enumerate(free):
        counts[i] = min(left // (len(free) - done), size)
        left -= counts[i]
    return counts


def _shortage(pools: Sequence[Pool], nsamples: int, seqlen: int, found: str) -> str:
    detail = "; ".join(pool.describe(seqlen) for pool in pools)
    return (
        f"not enough calibration samples: {found}, asked for nsamples={nsamples} of seqlen={seqlen} "
        f"tokens ({detail}). Samples shorter than seqlen are dropped: lower seqlen or nsamples, "
        "add data, or join short texts with ':concat=True'."
    )


def windows_from_text(tokenizer: Any, text: str, nsamples: int, seqlen: int, seed: int = 0) -> CalibrationSet:
    """The benchmark protocol's calibration set: random windows of one long text.

    ``text`` is tokenized once with the tokenizer's default special tokens (as the perplexity
    evaluation does). Then, for each of ``nsamples`` windows in turn, with one
    ``rng = random.Random(seed)``: ``start = rng.randint(0, n_tokens - seqlen - 1)`` and the
    window is ``ids[start : start + seqlen]`` (GPTQ's convention: windows may overlap, the very
    last start ``n_tokens - seqlen`` is never drawn). Needs ``n_tokens > seqlen``.
    """
    check_sizes(nsamples, seqlen)
    ids = torch.as_tensor(tokenizer(text)["input_ids"], dtype=torch.int64)
    if ids.shape[0] <= seqlen:
        raise ValueError(
            f"text has {ids.shape[0]} tokens; windows of seqlen={seqlen} need more than {seqlen}"
        )
    rng = random.Random(seed)
    starts = [rng.randint(0, ids.shape[0] - seqlen - 1) for _ in range(nsamples)]
    return CalibrationSet(torch.stack([ids[start : start + seqlen] for start in starts]))
