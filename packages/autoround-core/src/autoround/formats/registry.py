"""The registry of checkpoint formats, and the one path from a ``quantization_config`` to a spec.

Every loader (core's :func:`~autoround.loading.load_quantized` and
:func:`~autoround.loading.load_dense`, autoround-hf's quantizer) turns a checkpoint's config into
a :class:`~autoround.formats.base.CheckpointSpec` through :func:`spec_for`; savers go through
:func:`check_format`, which admits only formats that can be written.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoround.errors import CheckpointError, FormatError
from autoround.formats import auto_round, awq, compressed_tensors, gguf, gptq
from autoround.formats.base import CheckpointSpec, Format, quant_method_of

#: Format name -> entry, in Intel's names. ``auto_round`` reads every auto-round config; the
#: readers after it read layouts that are also named inside auto-round configs (transformers' and
#: Intel's names for GPTQ and AWQ), so when several read a config the last registered wins.
#: Entries that only write (``auto_round:auto_gptq``, ...) read nothing. A module adding a family
#: of entries (GGUF: ``gguf:q4_k_m``, ...) registers them all with one line: ``*gguf.FORMATS,``.
FORMATS: dict[str, Format] = {
    entry.name: entry
    for entry in (
        auto_round.FORMAT,
        auto_round.GPTQ_PACKED,
        auto_round.AWQ_PACKED,
        gptq.FORMAT,
        awq.FORMAT,
        compressed_tensors.FORMAT,
        *gguf.FORMATS,
    )
}
#: What separates several formats in one ``format`` string (``"auto_round,auto_gptq"``).
FORMAT_SEPARATOR = ","


def writable_formats() -> list[str]:
    """Names of the formats a quantized model can be saved in, in registry order."""
    return [name for name, entry in FORMATS.items() if entry.writable]


def check_format(format: str) -> str:
    """The registry key of ``format``, a format that can be written.

    Entry points call this before any work, so a typo never costs a quantization run.

    Raises:
        FormatError: an unknown name (with the closest names when there are), or a format only
            read here; both list the allowed names.
    """
    if not isinstance(format, str):
        raise FormatError(f"format must be a string such as 'auto_round', got {format!r}")
    key = format.strip().lower()
    allowed = writable_formats()
    if key in FORMATS and key not in allowed:
        raise FormatError(
            f"format {format!r} can be read but not written (only its reader is built); allowed: {allowed}"
        )
    if key not in FORMATS:
        close = difflib.get_close_matches(key, allowed, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise FormatError(f"unknown format {format!r}{hint}; allowed: {allowed}")
    return key


def check_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """The registry keys of one or several formats: ``"auto_round,auto_gptq"``, or a sequence
    whose items may themselves be comma-separated; repeats are dropped, the order kept.

    Raises:
        FormatError: no format, or any unknown or read-only one (see :func:`check_format`).
    """
    items = [formats] if isinstance(formats, str) else list(formats)
    names = [part for item in items for part in _split(item)]
    if not names:
        raise FormatError(f"no format given; allowed: {writable_formats()}")
    return tuple(dict.fromkeys(check_format(name) for name in names))


def _split(item: Any) -> list[Any]:
    if not isinstance(item, str):
        return [item]
    parts = [part.strip() for part in item.split(FORMAT_SEPARATOR)]
    if len(parts) > 1 and not all(parts):
        raise FormatError(f"format list {item!r} has an empty entry; write e.g. 'auto_round,auto_gptq'")
    return [part for part in parts if part] if len(parts) > 1 else [item]


def reader_for(config: Mapping[str, Any]) -> Format:
    """The entry that reads ``config``.

    Raises:
        FormatError: no entry reads it; the message names the quant_methods read.
    """
    readers = [entry for entry in FORMATS.values() if entry.can_read(config)]
    if not readers:
        methods = ", ".join(dict.fromkeys(entry.quant_method for entry in FORMATS.values()))
        raise FormatError(
            f"quant_method {quant_method_of(config)!r} cannot be loaded as auto-round; allowed: {methods}"
        )
    return readers[-1]


def to_auto_round_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``quantization_config`` (auto-round, GPTQ, AWQ) as auto-round keys.

    Raises:
        FormatError: an unknown ``quant_method``.
        CheckpointError: a variant of a known one that is not read (GPTQ act-order, ...).
    """
    return reader_for(config).to_auto_round(config)


def spec_for(config: Mapping[str, Any], block_names: Sequence[str] = ()) -> CheckpointSpec:
    """The spec of a checkpoint's ``quantization_config``, by the format that reads it.

    ``block_names`` (the model's decoder blocks) fill in a config that names none (GPTQ's).

    Raises:
        FormatError: no format reads the config.
        CheckpointError: the format refuses it, naming the key at fault.
    """
    return reader_for(config).read_spec(config, block_names)


def quantization_config_of(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The ``quantization_config`` of a checkpoint directory's ``config.json``."""
    path = Path(checkpoint_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: not a checkpoint directory")
    config = json.loads(path.read_text())
    if "quantization_config" not in config:
        raise CheckpointError(f"{path} has no quantization_config: not a quantized checkpoint")
    return dict(config["quantization_config"])


def checkpoint_spec(checkpoint_dir: str | Path, block_names: Sequence[str] = ()) -> CheckpointSpec:
    """The spec of a checkpoint directory (see :func:`spec_for`)."""
    return spec_for(quantization_config_of(checkpoint_dir), block_names)
