"""Checkpoint file IO: atomic output directories and safetensors weights, single or sharded.

Weights are only ever read from safetensors; pickle files (``*.bin``, ``*.pt``, ...) are
refused, never unpickled, because loading them can run arbitrary code.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from autoround.errors import CheckpointError, OutputWriteError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
#: safetensors dtype names and the torch dtypes they hold.
TORCH_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U64": torch.uint64,
    "U32": torch.uint32,
    "U16": torch.uint16,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DEFAULT_MAX_SHARD_BYTES = 5 * 2**30
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: errno values that mean the filesystem took no more bytes: no space, quota, file size limit.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: What a write error tells the user to do.
NO_SPACE_HINT = "free space or choose another --output_dir"


def write_error(path: Path, err: BaseException) -> OutputWriteError:
    """An :class:`OutputWriteError` naming ``path``, on one line, from an OSError or a
    SafetensorError (whose message may span lines and carries the OS error as text)."""
    text = " ".join(str(err).split()) or type(err).__name__
    hint = NO_SPACE_HINT if is_no_space(err) else "choose another --output_dir"
    out = OutputWriteError(f"could not write {path}: {text}; {hint}")
    if isinstance(err, OSError):
        out.errno = err.errno  # (filename or strerror would replace the message in str())
    return out


def is_no_space(err: BaseException) -> bool:
    """Whether ``err`` (OSError or SafetensorError) is a write the filesystem had no room for."""
    if isinstance(err, OSError):
        return err.errno in NO_SPACE_ERRNOS
    # safetensors reports the OS error only as text: "I/O error: No space left on device (os error 28)"
    return isinstance(err, SafetensorError) and "I/O error" in str(err)


@contextlib.contextmanager
def atomic_dir(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Write a directory all-or-nothing: yield a fresh temp dir that becomes ``target`` on success.

    The temp dir ``.<name>.tmp-XXXXXXXX`` lives beside ``target`` so the final rename stays on
    one filesystem. On an exception it is removed and ``target`` is left as it was; a write that
    found the disk full (or a file size limit) is raised as :class:`OutputWriteError` naming
    ``target``. An existing empty ``target`` is replaced; a non-empty one only with
    ``overwrite``, and the old contents are deleted only after the new directory is in place.

    Raises:
        FileExistsError: ``target`` is a non-empty directory and ``overwrite`` is false, or
            ``target`` exists and is not a directory.
        OutputWriteError: the filesystem took no more bytes (ENOSPC, EDQUOT, EFBIG).
    """
    target = Path(target)
    _check_target(target, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _fresh_sibling(target, "tmp")
    except OSError as err:
        if is_no_space(err):
            raise write_error(target, err) from err
        raise
    try:
        yield tmp
        _commit(tmp, target)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OutputWriteError) and str(tmp) in str(err):
            # Name the file where the user will look for it, not in the temp dir just removed.
            renamed = OutputWriteError(str(err).replace(str(tmp), str(target)))
            renamed.errno = err.errno
            raise renamed from err
        if is_no_space(err) and not isinstance(err, OutputWriteError):
            raise write_error(target, err) from err
        raise


def _check_target(target: Path, overwrite: bool) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory; choose another output path")
    if not overwrite and any(target.iterdir()):
        raise FileExistsError(
            f"{target} exists and is not empty; pass overwrite=True (--overwrite in the CLI) to replace it"
        )


def _fresh_sibling(target: Path, tag: str) -> Path:
    """Create and return an unused hidden directory beside ``target``."""
    while True:
        # os.mkdir (not tempfile.mkdtemp) so the result gets the umask's permissions, not 0o700:
        # this directory becomes the checkpoint.
        candidate = target.parent / f".{target.name}.{tag}-{uuid.uuid4().hex[:8]}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate


def _commit(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``, moving an existing ``target`` aside until that succeeded."""
    if not target.exists():
        os.replace(tmp, target)
        return
    aside = _fresh_sibling(target, "old")
    aside.rmdir()  # only the unique name is wanted
    os.replace(target, aside)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(aside, target)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def save_safetensors_sharded(
    tensors: dict[str, torch.Tensor],
    directory: Path,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Write ``tensors`` as ``model.safetensors``, or as shards plus an index when they do not fit.

    Shards are ``model-00001-of-0000N.safetensors``, filled greedily in the dict's order (a tensor
    larger than ``max_shard_bytes`` gets a shard of its own), with ``model.safetensors.index.json``
    in Hugging Face's layout: ``{"metadata": {"total_size": bytes}, "weight_map": {name: file}}``.

    Every name is written as its own copy: tensors that share storage (tied embeddings, views of
    one buffer) are cloned, because safetensors refuses shared storage in one file; loading
    gives independent tensors. To keep a tie, leave the duplicate name out, as transformers does.
    Non-contiguous tensors are made contiguous and tensors on other devices are copied to CPU.

    Args:
        tensors: name -> tensor.
        directory: an existing directory without weight files in it.
        max_shard_bytes: the largest shard, in bytes of tensor data.
        metadata: string header metadata for every file; ``"format": "pt"`` is added unless
            given, because transformers refuses files without it.

    Returns:
        The weight file names written, in order (the index file not included).

    Raises:
        ValueError: ``max_shard_bytes`` is not positive.
        FileExistsError: ``directory`` already holds weight files that would mix with these.
        OutputWriteError: a file could not be written (disk full, ...), naming it; the files of
            this call already written are removed, so ``directory`` holds no partial weights.
    """
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be a positive number of bytes, got {max_shard_bytes}")
    directory = Path(directory)
    stale = sorted(p.name for p in directory.glob("model*.safetensors*"))
    if stale:
        raise FileExistsError(
            f"{directory} already holds weight files {stale}; write into an empty directory"
        )
    header = {"format": "pt", **(metadata or {})}
    shards = _plan_shards(tensors, max_shard_bytes)
    names = shard_file_names(len(shards))
    written: list[Path] = []
    try:
        weight_map: dict[str, str] = {}
        for file_name, keys in zip(names, shards, strict=True):
            written.append(directory / file_name)
            write_safetensors(_prepare_shard(tensors, keys), directory / file_name, header)
            weight_map.update(dict.fromkeys(keys, file_name))
        if len(shards) > 1:
            index = {
                "metadata": {"total_size": sum(_nbytes(t) for t in tensors.values())},
                "weight_map": dict(sorted(weight_map.items())),
            }
            written.append(directory / INDEX_FILE)
            try:
                (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
            except OSError as err:
                raise write_error(directory / INDEX_FILE, err) from err
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return names


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, header: dict[str, str]) -> None:
    """``save_file``, with a failed write raised as :class:`OutputWriteError` naming ``path``
    (every safetensors file a checkpoint writer makes goes through here)."""
    try:
        save_file(tensors, path, metadata=header)
    except (SafetensorError, OSError) as err:
        if isinstance(err, SafetensorError) and not is_no_space(err):
            raise  # not a write failure: a bug to see with its traceback
        raise write_error(path, err) from err


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _plan_shards(tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> list[list[str]]:
    """Names per shard, greedily in order; never an empty shard, except for an empty dict."""
    shards: list[list[str]] = [[]]
    size = 0
    for name, tensor in tensors.items():
        nbytes = _nbytes(tensor)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def _prepare_shard(tensors: dict[str, torch.Tensor], keys: list[str]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors of one file, none sharing storage with another."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        tensor = tensors[key]
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            raise ValueError(f"{key}: only dense tensors can be saved, got {type(tensor).__name__}")
        tensor = tensor.detach()
        pointer = tensor.untyped_storage().data_ptr()
        if tensor.numel() and pointer in seen:
            tensor = tensor.clone()
        seen.add(pointer)
        out[key] = tensor.to("cpu").contiguous()
    return out


def load_safetensors_dir(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory (single file or sharded with an index), on CPU.

    Raises the same errors as :func:`iter_safetensors_dir`.
    """
    return dict(iter_safetensors_dir(directory))


def iter_safetensors_dir(directory: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` pairs of a checkpoint directory, one tensor read at a time.

    Reads ``model.safetensors.index.json`` and its shards when the index exists, else
    ``model.safetensors``.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        CheckpointError: no safetensors weights (naming any pickle files found, which are never
            loaded), an unreadable index, a missing shard or tensor, or a corrupt or truncated
            file (named in the message).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    for file_name, keys in _weight_files(directory):
        yield from _read_file(directory / file_name, keys)


def tensor_names(directory: Path) -> list[str]:
    """Every tensor name of a checkpoint directory, read from the safetensors headers only.

    Each weight file's header is parsed, which also detects truncated files (safetensors checks
    that the data the header describes fits the file).

    Raises:
        CheckpointError: as :func:`iter_safetensors_dir`, naming the file.
    """
    names: list[str] = []
    for file_name, _ in _weight_files(Path(directory)):
        path = Path(directory) / file_name
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                names.extend(handle.keys())
        except (SafetensorError, OSError) as err:
            raise CheckpointError(
                f"{path} is not a readable safetensors file (corrupt or truncated?): {err}"
            ) from err
    return names


def weight_file_paths(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (its index's shards, or the single file).

    Raises:
        CheckpointError: as :func:`iter_safetensors_dir`.
    """
    return [Path(directory) / name for name, _ in _weight_files(Path(directory))]


def _weight_files(directory: Path) -> list[tuple[str, list[str] | None]]:
    """(file, names expected in it, or None for all) for each weight file, in reading order."""
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        return _files_from_index(index_path)
    if (directory / SINGLE_FILE).is_file():
        return [(SINGLE_FILE, None)]
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{directory} holds only pickle weight files {pickles}; they are never loaded because "
            f"unpickling can run arbitrary code. Convert them to {SINGLE_FILE} (safetensors) first"
        )
    raise CheckpointError(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}")


def _files_from_index(index_path: Path) -> list[tuple[str, list[str] | None]]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{index_path} is not a readable index with a 'weight_map': {err}") from err
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_path}: 'weight_map' must map tensor names to file names")
    by_file: dict[str, list[str]] = {}
    for name, file_name in weight_map.items():
        # A shard name with a path in it could point outside the checkpoint.
        if not isinstance(file_name, str) or Path(file_name).name != file_name or file_name in (".", ".."):
            raise CheckpointError(f"{index_path}: tensor {name!r} maps to {file_name!r}, not a file name")
        by_file.setdefault(file_name, []).append(name)
    for file_name in by_file:
        if not (index_path.parent / file_name).is_file():
            raise CheckpointError(f"{index_path} lists shard {file_name}, which is missing")
    return list(by_file.items())


def _read_file(path: Path, expected: list[str] | None) -> Iterator[tuple[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            present = list(handle.keys())
            if expected is not None:
                missing = sorted(set(expected) - set(present))
                if missing:
                    raise CheckpointError(f"{path} lacks tensors its index assigns to it: {missing[:5]}")
            for name in present if expected is None else expected:
                yield name, handle.get_tensor(name)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (corrupt or truncated?): {err}"
        ) from err


def shard_file_names(count: int) -> list[str]:
    """The weight files' names of a checkpoint in ``count`` shards (transformers' names)."""
    if count == 1:
        return [SINGLE_FILE]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
