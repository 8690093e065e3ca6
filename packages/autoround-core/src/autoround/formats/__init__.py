"""Checkpoint formats, by name (:data:`FORMATS`): what each stores, writes and reads, and who loads it.

External format strings ("auto-round", "auto_round:auto_gptq", "gptq", "awq", "compressed-tensors")
appear only in these modules. Adding a format: one module defining its :class:`Format` entry, one
line in :mod:`autoround.formats.registry`, its tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from autoround.formats.auto_round import parse_config
from autoround.formats.awq_layout import convert_layer as convert_awq_layer
from autoround.formats.awq_layout import expect_awq
from autoround.formats.base import (
    GPTQ_PACKING,
    PLAIN_PACKING,
    QUANT_METHOD,
    SCHEME_KEYS,
    Capabilities,
    CheckpointSpec,
    Format,
    raise_refusals,
)
from autoround.formats.combine import adapt_plan, default_scheme_name, entries, run_scheme
from autoround.formats.compressed_tensors import ct_qparams
from autoround.formats.gguf import export_gguf, gguf_file
from autoround.formats.gptq import IGNORED_TENSORS as GPTQ_IGNORED_TENSORS
from autoround.formats.gptq_layout import pack_layer, unpack_layer
from autoround.formats.registry import (
    FORMATS,
    check_format,
    check_formats,
    checkpoint_spec,
    quantization_config_of,
    reader_for,
    spec_for,
    to_auto_round_config,
    writable_formats,
)
from autoround.io import atomic_dir
from autoround.output_guard import check_output_dir, model_source
from autoround.quantized_model import QuantizedModel


def checkpoint_dirs(output_dir: str | Path, formats: str | Sequence[str]) -> dict[str, Path]:
    """Where each format's checkpoint lies: ``output_dir`` itself for one format; for several,
    a subdirectory each, named as Intel names them (``auto-round``, ``auto-gptq``, ``gguf-q4-k-m``)."""
    names = check_formats(formats)
    if len(names) == 1:
        return {names[0]: Path(output_dir)}
    return {name: Path(output_dir) / FORMATS[name].subdir for name in names}


def save(
    qm: QuantizedModel,
    output_dir: str | Path,
    format: str | Sequence[str] = "auto_round",
    overwrite: bool = False,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Save ``qm`` in one format or several (``"auto_round,auto_gptq"``; see :func:`check_formats`),
    each into its own subdirectory when several (:func:`checkpoint_dirs`; a GGUF recipe beside
    other formats is written from their weights: :mod:`autoround.formats.combine`), all-or-nothing: every
    format's refusals are checked before anything is written, and one temp directory becomes
    ``output_dir`` by a rename. ``extra_files`` (name -> text) are written into each checkpoint.
    An output that would overwrite or lie inside the directory the model was loaded from is refused.
    """
    dirs, writers = checkpoint_dirs(output_dir, format), entries(format)
    check_output_dir(output_dir, {"model": model_source(qm.model)})
    several = len(dirs) > 1
    raise_refusals(
        [f"{name}: {why}" if several else why for name in dirs for why in writers[name].refusals(qm)]
    )
    target = Path(output_dir)
    with atomic_dir(target, overwrite=overwrite) as tmp:
        for name, directory in dirs.items():
            inside = tmp / directory.relative_to(target)
            inside.mkdir(exist_ok=True)
            writers[name].write(qm, inside)
            for file, text in (extra_files or {}).items():
                (inside / file).write_text(text)
    return target


__all__ = [
    "FORMATS",
    "GPTQ_IGNORED_TENSORS",
    "GPTQ_PACKING",
    "PLAIN_PACKING",
    "QUANT_METHOD",
    "SCHEME_KEYS",
    "Capabilities",
    "CheckpointSpec",
    "Format",
    "adapt_plan",
    "check_format",
    "check_formats",
    "checkpoint_dirs",
    "checkpoint_spec",
    "convert_awq_layer",
    "ct_qparams",
    "default_scheme_name",
    "entries",
    "expect_awq",
    "export_gguf",
    "gguf_file",
    "pack_layer",
    "parse_config",
    "quantization_config_of",
    "reader_for",
    "run_scheme",
    "save",
    "spec_for",
    "to_auto_round_config",
    "unpack_layer",
    "writable_formats",
]
