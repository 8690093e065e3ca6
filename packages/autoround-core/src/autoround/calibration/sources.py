"""Where calibration samples come from: texts (Hub, local files, lists) and ready token ids.

Texts become token-id rows here; which rows are usable and which are kept is ``sampling``'s job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from autoround.calibration.spec import DatasetSpec
from autoround.errors import AutoRoundError

logger = logging.getLogger(__name__)

HUB_ALIASES = {"pile-10k": "NeelNanda/pile-10k"}
LOCAL_SUFFIXES = (".txt", ".json", ".jsonl")
TEXT_FIELD = "text"

Row = tuple[torch.Tensor, torch.Tensor | None]  # 1-D int64 ids, matching attention mask or None


class DatasetUnavailableError(AutoRoundError, OSError):
    """A calibration dataset could not be loaded (Hub unreachable, file missing, no text)."""


#: Spec names served by text shipped inside the package (no network needed).
SHIPPED = {"wikitext2": "wikitext2_valid.txt"}


def is_local(name: str) -> bool:
    """Whether a spec name is a local file: it ends in .txt/.json/.jsonl or exists on disk."""
    return name in SHIPPED or name.lower().endswith(LOCAL_SUFFIXES) or Path(name).is_file()


def load_texts(spec: DatasetSpec) -> list[str]:
    """The texts of one spec's source, in file / dataset order."""
    if not is_local(spec.name):
        return _load_hub(spec)
    path = _shipped(spec.name) if spec.name in SHIPPED else Path(spec.name)
    if spec.split:
        raise DatasetUnavailableError(f"{spec.name}: split= applies to Hub datasets only")
    if not path.is_file():
        raise DatasetUnavailableError(f"calibration file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        text = path.read_text(encoding="utf-8")
        if spec.concat:  # the whole file is one text, cut into windows later
            return [text] if text.strip() else []
        return [line.rstrip() for line in text.splitlines() if line.strip()]
    if suffix in (".json", ".jsonl"):
        return _load_json(path)
    raise DatasetUnavailableError(f"{path}: unsupported file type; use {', '.join(LOCAL_SUFFIXES)}")


def _shipped(name: str) -> Path:
    from autoround.data import default_calibration_text_path

    return default_calibration_text_path().with_name(SHIPPED[name])


def _load_json(path: Path) -> list[str]:
    import datasets

    try:
        data = datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as error:  # datasets raises many types for malformed files
        raise DatasetUnavailableError(f"{path}: could not read it as JSON: {error}") from error
    return _text_column(data, str(path))


def _load_hub(spec: DatasetSpec) -> list[str]:
    import datasets

    name = HUB_ALIASES.get(spec.name, spec.name)
    split = "+".join(spec.split) or "train"
    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as error:  # offline, not found, gated, ...: one message for all
        raise DatasetUnavailableError(
            f"could not load calibration dataset {name!r} (split {split!r}) from the Hugging Face "
            f"Hub: {type(error).__name__}: {error}. Without Hub access, pass a local "
            ".txt/.json/.jsonl path, a list of strings, or a list of token-id tensors instead."
        ) from error
    return _text_column(data, name)


def _text_column(data: Any, where: str) -> list[str]:
    columns = list(getattr(data, "column_names", None) or [])
    if TEXT_FIELD not in columns:
        raise DatasetUnavailableError(f"{where}: no {TEXT_FIELD!r} field (fields: {columns})")
    return [text for text in data[TEXT_FIELD] if isinstance(text, str) and text.strip()]


def render_chat(tokenizer: Any, texts: Sequence[str], system_prompt: str) -> list[str]:
    """Each text as one user turn (after the system turn, if any), with a generation prompt.

    As Intel: when the template rejects the system role, retry without it.
    """
    rendered = []
    for text in texts:
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        user = [{"role": "user", "content": text}]
        kwargs = {"tokenize": False, "add_generation_prompt": True}
        try:
            rendered.append(tokenizer.apply_chat_template(system + user, **kwargs))
        except Exception:
            if not system:
                raise
            logger.warning("the chat template rejected the system prompt; dropping it")
            rendered.append(tokenizer.apply_chat_template(user, **kwargs))
    return rendered


def tokenize(tokenizer: Any, texts: Sequence[str], seqlen: int, spec: DatasetSpec) -> list[Row]:
    """Token rows of ``texts``: each text truncated to its first ``seqlen`` tokens (as Intel),
    or with ``spec.concat`` all texts joined and cut into full ``seqlen`` windows."""
    if tokenizer is None:
        raise ValueError("a tokenizer is needed to calibrate on text")
    if spec.apply_chat_template:
        texts = render_chat(tokenizer, texts, spec.system_prompt)
    if not texts:
        return []
    if spec.concat:
        ids = tokenizer(list(texts))["input_ids"]
        return [(window, None) for window in concat_windows(tokenizer, ids, seqlen)]
    ids = tokenizer(list(texts), truncation=True, max_length=seqlen)["input_ids"]
    return [(torch.tensor(row, dtype=torch.int64), None) for row in ids]


def concat_windows(tokenizer: Any, rows: Sequence[Sequence[int]], seqlen: int) -> list[torch.Tensor]:
    """Join ``rows`` and cut the stream into full windows of ``seqlen`` tokens (tail dropped).

    As Intel: a leading BOS / trailing EOS that the tokenizer adds to each text is stripped
    before joining and put back around every window (so a window holds ``seqlen`` tokens
    including them).
    """
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    has_bos = bos is not None and any(row and row[0] == bos for row in rows)
    has_eos = eos is not None and any(row and row[-1] == eos for row in rows)
    stream: list[int] = []
    for row in rows:
        start = 1 if has_bos and row and row[0] == bos else 0
        stop = len(row) - 1 if has_eos and row and row[-1] == eos else len(row)
        stream.extend(row[start:stop])
    body = seqlen - int(has_bos) - int(has_eos)
    if body < 1:
        return []
    windows = []
    for start in range(0, len(stream) - body + 1, body):
        window = ([bos] if has_bos else []) + stream[start : start + body] + ([eos] if has_eos else [])
        windows.append(torch.tensor(window, dtype=torch.int64))
    return windows


def token_rows(data: Iterable[Any]) -> list[Row]:
    """Rows from token ids: a list of 1-D tensors / int lists, or batches from a DataLoader
    (2-D tensors, mappings with ``input_ids`` and optional ``attention_mask``, or tuples whose
    first item is ``input_ids``)."""
    rows: list[Row] = []
    for item in data:
        rows.extend(_item_rows(item))
    return rows


def _item_rows(item: Any) -> list[Row]:
    mask = None
    if isinstance(item, Mapping):
        if "input_ids" not in item:
            raise TypeError(f"calibration batch has no 'input_ids' (keys: {list(item)})")
        ids, mask = item["input_ids"], item.get("attention_mask")
    elif isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        ids = item[0]
    else:
        ids = item
    ids = _as_ids(ids)
    if mask is not None:
        mask = _as_ids(mask)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask {tuple(mask.shape)} != input_ids {tuple(ids.shape)}")
    if ids.dim() == 1:
        return [(ids, mask)]
    if ids.dim() != 2:
        raise ValueError(f"input_ids must be 1-D or 2-D, got shape {tuple(ids.shape)}")
    masks = list(mask) if mask is not None else [None] * len(ids)
    return list(zip(ids, masks, strict=True))


def _as_ids(value: Any) -> torch.Tensor:
    if isinstance(value, str):
        raise TypeError("mix of text and token ids: pass either strings or token ids")
    tensor = torch.as_tensor(value)
    if tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"token ids must be integers, got {tensor.dtype}")
    return tensor.to(torch.int64).cpu()
