"""Refuse output locations that would overwrite, delete or pollute what a run reads.

A checkpoint is written into a temp dir beside the output and renamed over it, and
``overwrite`` deletes the old output afterwards: an output that is, contains or lies inside the
input model (or the calibration data, or the working directory) would delete it or mix the
checkpoint into it. Every entry point asks here before any work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from autoround.errors import UsageError


def check_output_dir(output_dir: str | Path, inputs: Mapping[str, str | Path | None]) -> None:
    """Raise :class:`UsageError` when ``output_dir`` is, contains or lies inside the working
    directory or an existing input path.

    Args:
        output_dir: where the checkpoint will be written.
        inputs: label (``"model"``, ``"dataset"``) -> path read by the run; None or paths that do
            not exist on disk (Hub ids) are skipped.
    """
    out = Path(output_dir).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if out == cwd or out in cwd.parents:
        raise UsageError(
            f"output directory {str(output_dir)!r} is {'the' if out == cwd else 'a parent of the'} "
            f"working directory {cwd}; replacing it would delete that directory. Choose a new directory"
        )
    for label, path in inputs.items():
        relation = _relation(out, path)
        if relation:
            raise UsageError(
                f"output directory {str(output_dir)!r} {relation} the {label} {str(path)!r}; writing "
                f"there could delete or corrupt it. Choose a directory outside it"
            )


def _relation(out: Path, path: str | Path | None) -> str | None:
    if path is None or not Path(path).expanduser().exists():
        return None
    source = Path(path).expanduser().resolve()
    if out == source:
        return "is"
    if out in source.parents:
        return "contains"
    if source in out.parents:
        return "lies inside"
    return None


def model_source(model: Any) -> str | None:
    """The local directory a loaded transformers model came from, if it has one."""
    config = getattr(model, "config", None)
    name = getattr(model, "name_or_path", None) or getattr(config, "_name_or_path", None)
    return name if isinstance(name, str) and name and Path(name).expanduser().is_dir() else None


def dataset_paths(dataset: Any) -> list[str]:
    """Local files or directories named by a dataset argument (a path or a ','-joined spec)."""
    if isinstance(dataset, Path):
        return [str(dataset)]
    if not isinstance(dataset, str):
        return []
    candidates: Iterable[str] = (part.split(":", 1)[0].strip() for part in dataset.split(","))
    return [c for c in candidates if c and Path(c).expanduser().exists()]


def run_inputs(model: Any, dataset: Any) -> dict[str, str | Path | None]:
    """The ``inputs`` of :func:`check_output_dir` for a model (object or path) and a dataset."""
    source = model if isinstance(model, str | Path) else model_source(model)
    inputs: dict[str, str | Path | None] = {"model": source}
    for i, path in enumerate(dataset_paths(dataset)):
        inputs["dataset" if i == 0 else f"dataset ({i + 1})"] = path
    return inputs
