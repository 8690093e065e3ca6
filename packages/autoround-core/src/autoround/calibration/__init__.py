"""Calibration data: spec strings, local files, texts or token ids -> a seeded CalibrationSet.

>>> calib = build_calibration_set("pile-10k:num=64,data/extra.jsonl:concat", tok, 128, 2048)
>>> calib.input_ids.shape
torch.Size([128, 2048])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from autoround.calibration.sampling import CalibrationSet, Pool, check_sizes, fit, select, windows_from_text
from autoround.calibration.sources import DatasetUnavailableError, load_texts, token_rows, tokenize
from autoround.calibration.spec import DEFAULT_DATASET, DatasetSpec, DatasetSpecError, parse_spec

__all__ = [
    "DEFAULT_DATASET",
    "CalibrationSet",
    "DatasetSpec",
    "DatasetSpecError",
    "DatasetUnavailableError",
    "build_calibration_set",
    "parse_spec",
    "windows_from_text",
]


def build_calibration_set(
    dataset: str | Iterable[Any] = DEFAULT_DATASET,
    tokenizer: Any = None,
    nsamples: int = 128,
    seqlen: int = 2048,
    seed: int = 42,
) -> CalibrationSet:
    """Exactly ``nsamples`` rows of ``seqlen`` tokens, chosen with ``random.Random(seed)``.

    Args:
        dataset: a spec string (Intel syntax, see :mod:`autoround.calibration.spec`: Hub names
            or local .txt/.json/.jsonl paths, ``,``-joined), a list of strings, a list of
            token-id tensors / int lists, or an iterable of batches (a DataLoader yielding
            tensors or dicts with ``input_ids``).
        tokenizer: needed for text; unused for token ids.

    Each text is tokenized and truncated to its first ``seqlen`` tokens (as Intel); shorter
    ones are dropped unless ``concat`` joins them into windows. Token ids are truncated and
    dropped the same way.

    Raises:
        DatasetSpecError: the spec string is malformed.
        DatasetUnavailableError: a source cannot be loaded (e.g. the Hub is unreachable).
        ValueError: fewer usable samples than ``nsamples``, or bad sizes.
    """
    check_sizes(nsamples, seqlen)
    if isinstance(dataset, str):
        specs = parse_spec(dataset)
        pools = [_text_pool(spec, load_texts(spec), tokenizer, seqlen) for spec in specs]
        return select(pools, [spec.num for spec in specs], nsamples, seqlen, seed)
    if isinstance(dataset, torch.Tensor):
        dataset = [dataset]  # one (batch, seqlen) tensor
    items = dataset if isinstance(dataset, (list, tuple)) else list(dataset)
    if items and all(isinstance(item, str) for item in items):
        pool = _text_pool(DatasetSpec(name="texts"), list(items), tokenizer, seqlen)
    else:
        pool = fit("token ids", token_rows(items), seqlen, drop_padding=False)
    return select([pool], [None], nsamples, seqlen, seed)


def _text_pool(spec: DatasetSpec, texts: list[str], tokenizer: Any, seqlen: int) -> Pool:
    return fit(spec.name, tokenize(tokenizer, texts, seqlen, spec), seqlen, drop_padding=True)
