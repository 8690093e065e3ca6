"""Checkpoint formats, by name. Each entry saves a :class:`QuantizedModel` to a directory.

External format strings ("auto-round", "auto_round:auto_gptq") appear only in these modules.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from autoround.errors import SchemeError
from autoround.formats import auto_round
from autoround.quantized_model import QuantizedModel

SaveFn = Callable[..., Path]

#: Format name -> save function ``save(qm, output_dir, overwrite=False) -> Path``.
FORMATS: dict[str, SaveFn] = {
    "auto_round": auto_round.save,
}


def save(
    qm: QuantizedModel, output_dir: str | Path, format: str = "auto_round", overwrite: bool = False
) -> Path:
    """Save ``qm`` in the named format; unknown names raise SchemeError listing the known ones."""
    key = format.strip().lower()
    if key not in FORMATS:
        raise SchemeError(f"unknown format {format!r}; allowed: {sorted(FORMATS)}")
    return FORMATS[key](qm, output_dir, overwrite=overwrite)


__all__ = ["FORMATS", "save"]
