"""Perplexity over non-overlapping windows, as the project's benchmark protocol defines it.

The text is tokenized once (with the tokenizer's default special tokens), cut into windows of
``seqlen`` tokens with the tail dropped, and each window is run on its own. Perplexity is
``exp(sum of token NLL / predicted tokens)`` where each window predicts ``seqlen - 1`` tokens.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_SEQLEN = 2048


@dataclass(frozen=True)
class PerplexityResult:
    """Outcome of a perplexity evaluation.

    Attributes:
        ppl: ``exp(nll_sum / predicted_tokens)``.
        nll_sum: summed negative log-likelihood (natural log) of every predicted token.
        predicted_tokens: number of tokens scored, ``windows * (seqlen - 1)``.
        windows: number of windows evaluated.
    """

    ppl: float
    nll_sum: float
    predicted_tokens: int
    windows: int


def perplexity_of_file(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    path: str | PathLike[str],
    *,
    seqlen: int = DEFAULT_SEQLEN,
    max_windows: int | None = None,
    batch_size: int = 1,
    compute_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of the UTF-8 text in ``path``; options as for :func:`perplexity_of_ids`.

    The file is read in Python's text mode, which turns ``\\r\\n`` line endings into ``\\n``.
    ``wiki.test.raw`` has ``\\r\\n`` ones; read this way SmolLM2 sees the protocol's 147
    windows (the untranslated bytes give 148, and a different perplexity).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation text {str(path)!r} is not a file")
    text = path.read_text(encoding="utf-8")
    return perplexity_of_text(
        model,
        tokenizer,
        text,
        seqlen=seqlen,
        max_windows=max_windows,
        batch_size=batch_size,
        compute_dtype=compute_dtype,
        progress=progress,
    )


def perplexity_of_text(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    seqlen: int = DEFAULT_SEQLEN,
    max_windows: int | None = None,
    batch_size: int = 1,
    compute_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of ``text``, tokenized once; options as for :func:`perplexity_of_ids`."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    input_ids = tokenizer(text, return_tensors="pt").input_ids
    return perplexity_of_ids(
        model,
        input_ids,
        seqlen=seqlen,
        max_windows=max_windows,
        batch_size=batch_size,
        compute_dtype=compute_dtype,
        progress=progress,
    )


def perplexity_of_ids(
    model: nn.Module,
    input_ids: torch.Tensor,
    *,
    seqlen: int = DEFAULT_SEQLEN,
    max_windows: int | None = None,
    batch_size: int = 1,
    compute_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of a token sequence over non-overlapping windows of ``seqlen`` tokens.

    Args:
        model: a causal LM whose forward takes ``input_ids`` and returns ``.logits``.
        input_ids: token ids, shape ``(n,)`` or ``(1, n)``.
        seqlen: window length (>= 2); the tail shorter than a window is dropped.
        max_windows: evaluate only the first this many windows (>= 1); None for all.
        batch_size: windows per forward pass (>= 1); results do not depend on it.
        compute_dtype: run the model in this dtype (e.g. fp32 for a bf16 model on a CPU).
            The model's floating parameters and buffers are cast in place for the call and the
            original tensors put back afterwards, so the model is returned unchanged, bit for
            bit; peak memory holds both copies. None runs the model as it is.
        progress: show a tqdm progress bar.

    The NLL is always computed from fp32 logits, whatever the model's dtype.
    """
    windows = _windows(input_ids, seqlen, max_windows)
    _check_positive_int("batch_size", batch_size)
    if compute_dtype is not None and not (
        isinstance(compute_dtype, torch.dtype) and compute_dtype.is_floating_point
    ):
        raise ValueError(f"compute_dtype must be a floating-point torch.dtype or None, got {compute_dtype!r}")
    nll_sum, done = 0.0, 0  # Python float: accumulating across windows in float64
    with _cast_temporarily(model, compute_dtype), _eval_mode(model), torch.inference_mode():
        device = _device_of(model)
        bar = tqdm(total=len(windows), desc="perplexity", unit="window", disable=not progress)
        with bar:
            for batch in windows.split(batch_size):
                nll_sum += _batch_nll(model, batch.to(device))
                done += len(batch)
                bar.update(len(batch))
                bar.set_postfix(ppl=f"{math.exp(nll_sum / (done * (seqlen - 1))):.3f}")
    predicted = len(windows) * (seqlen - 1)
    result = PerplexityResult(math.exp(nll_sum / predicted), nll_sum, predicted, len(windows))
    logger.info("Perplexity %.4f over %d windows of %d tokens", result.ppl, result.windows, seqlen)
    return result


def _windows(input_ids: torch.Tensor, seqlen: int, max_windows: int | None) -> torch.Tensor:
    """Validate the arguments and cut ``input_ids`` into a (windows, seqlen) tensor."""
    _check_positive_int("seqlen", seqlen, minimum=2)
    if max_windows is not None:
        _check_positive_int("max_windows", max_windows)
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"input_ids must be an integer torch.Tensor, got {input_ids!r:.80}")
    if input_ids.dim() == 2 and input_ids.shape[0] == 1:
        input_ids = input_ids[0]
    if input_ids.dim() != 1:
        raise ValueError(f"input_ids must have shape (n,) or (1, n), got {tuple(input_ids.shape)}")
    count = input_ids.numel() // seqlen
    if count == 0:
        raise ValueError(
            f"the text has {input_ids.numel()} tokens, fewer than one window of seqlen={seqlen}; "
            "pass a longer text or a smaller seqlen"
        )
    if max_windows is not None:
        count = min(count, max_windows)
    return input_ids[: count * seqlen].view(count, seqlen)


def _batch_nll(model: nn.Module, batch: torch.Tensor) -> float:
    """Summed NLL of tokens 1.. of every window in ``batch``, from fp32 logits."""
    logits = model(input_ids=batch, use_cache=False).logits
    # Upcasting before the softmax keeps bf16 rounding out of the loss.
    shifted = logits[:, :-1, :].float()
    nll = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
    return float(nll)


def _check_positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Run in eval mode (no dropout), then restore the caller's train/eval flag."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _cast_temporarily(model: nn.Module, dtype: torch.dtype | None) -> Iterator[None]:
    """Swap in ``dtype`` copies of the floating tensors, putting the originals back on exit."""
    if dtype is None:
        yield
        return
    originals: list[tuple[torch.Tensor, torch.Tensor]] = []
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point() and tensor.dtype != dtype:
            originals.append((tensor, tensor.data))
            # Assigning .data keeps every reference (tied weights, hooks) pointing at the module's tensors.
            tensor.data = tensor.data.to(dtype)
    try:
        yield
    finally:
        for tensor, data in originals:
            tensor.data = data
