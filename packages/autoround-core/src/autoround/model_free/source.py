"""Where a model-free run reads from: a local checkpoint directory, a demo alias or a Hub id
(downloaded with ``huggingface_hub.snapshot_download``, safetensors and metadata only), and what
its safetensors headers say: every tensor's name, shape and dtype, shard by shard, without
reading a tensor."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError, safe_open

from autoround.errors import CheckpointError
from autoround.io import INDEX_FILE, PICKLE_SUFFIXES, TORCH_DTYPES, weight_file_paths
from autoround.model_sources import resolve_model_path

logger = logging.getLogger(__name__)

#: Files of a source directory never copied into the output: weights (written anew), the model
#: config (rewritten with the quantization config), stale quantization configs (Intel's list) and
#: the model card, which describes the unquantized model.
NOT_COPIED = frozenset(
    {"config.json", "quantization_config.json", "quantize_config.json", "quant_config.json", "README.md"}
)
#: Weight files of other frameworks, never downloaded from the Hub.
FOREIGN_WEIGHTS = ("*.msgpack", "*.h5", "*.onnx", "*.gguf", "*.tflite", "*.ot")
#: safetensors dtypes of floating-point tensors (the ones a Linear weight can be quantized from).
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as its file's header describes it."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES


@dataclass(frozen=True)
class Shard:
    """One safetensors file of the checkpoint and its tensors, in the file's order."""

    path: Path
    tensors: tuple[TensorInfo, ...]


class ShardReader:
    """The tensors of one safetensors file, each read with plain file reads into fresh memory.

    ``safe_open`` memory-maps the file and its tensors are views of the mapping: every page read
    stays resident and counts in the process's RSS until the file is closed (2.54 GiB of file
    pages a third of the way through a 5 GB shard of a Llama-3-8B shape, measured). Here a
    tensor's bytes are read into a new buffer (or one the caller reuses), so
    memory holds the tensors in use and no more; the file's pages stay in the page cache, which
    the kernel reclaims as it needs. Use it as a context manager; :meth:`get_tensor` as
    ``safe_open``'s.

    Raises:
        CheckpointError: an unreadable header, or a tensor whose bytes are not all in the file
            (truncated after the header was read), naming the file and tensor.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "rb", buffering=0)  # noqa: SIM115 (closed in close)
        try:
            self._entries, self._data_start = self._header()
        except BaseException:
            self._file.close()
            raise

    def _header(self) -> tuple[dict[str, tuple[str, tuple[int, ...], int, int]], int]:
        try:
            size = int.from_bytes(self._read_at(0, 8), "little")
            header = json.loads(self._read_at(8, size))
            entries = {}
            for name, entry in header.items():
                if name == "__metadata__":
                    continue
                start, end = (int(x) for x in entry["data_offsets"])
                entries[name] = (str(entry["dtype"]), tuple(int(d) for d in entry["shape"]), start, end)
        except (ValueError, KeyError, TypeError, AttributeError, EOFError) as err:
            raise CheckpointError(f"{self.path} has no readable safetensors header: {err!r}") from err
        return entries, 8 + size

    def _read_at(self, offset: int, nbytes: int, into: memoryview | None = None) -> bytes:
        buffer = into if into is not None else memoryview(bytearray(nbytes))
        done = 0
        while done < nbytes:
            got = os.preadv(self._file.fileno(), [buffer[done:]], offset + done)
            if got == 0:
                raise EOFError(f"{nbytes - done} of {nbytes} bytes missing at offset {offset + done}")
            done += got
        return bytes(buffer) if into is None else b""

    def keys(self) -> list[str]:
        return list(self._entries)

    def get_tensor(self, name: str, into: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor ``name``, in memory of its own, or a view of the start of ``into`` (a 1-D
        uint8 tensor at least :meth:`nbytes` long, reused by the caller to spare the kernel
        mapping fresh pages for every tensor: 0.8 s per GB read here, against 0.2 s)."""
        dtype_name, shape, start, end = self._entries[name]
        dtype = self._dtype(name, dtype_name)
        return self._read_block(name, start, end - start, into).view(dtype).reshape(shape)

    def nbytes(self, name: str) -> int:
        """Bytes of the tensor ``name`` in the file."""
        _, _, start, end = self._entries[name]
        return end - start

    def get_row_blocks(self, name: str, max_bytes: int) -> Iterator[torch.Tensor]:
        """The tensor ``name`` as consecutive blocks of whole rows (along its first dimension), each
        read into memory of its own when it is wanted and at most ``max_bytes`` (or one row);
        a tensor with fewer than 2 dimensions comes whole."""
        dtype_name, shape, start, end = self._entries[name]
        if len(shape) < 2 or end <= start:
            yield self.get_tensor(name)
            return
        dtype = self._dtype(name, dtype_name)
        row_bytes = (end - start) // shape[0]
        rows = max(1, max_bytes // row_bytes)
        for first in range(0, shape[0], rows):
            count = min(rows, shape[0] - first)
            offset = start + first * row_bytes
            data = self._read_block(name, offset, count * row_bytes)
            yield data.view(dtype).reshape(count, *shape[1:])

    def _dtype(self, name: str, dtype_name: str) -> torch.dtype:
        dtype = TORCH_DTYPES.get(dtype_name)
        if dtype is None:
            known = ", ".join(sorted(TORCH_DTYPES))
            raise CheckpointError(
                f"tensor {name} of {self.path} has dtype {dtype_name}; model-free RTN reads {known}"
            )
        return dtype

    def _read_block(
        self, name: str, offset: int, nbytes: int, into: torch.Tensor | None = None
    ) -> torch.Tensor:
        if into is not None and (into.dtype != torch.uint8 or into.dim() != 1 or into.numel() < nbytes):
            raise ValueError(f"a buffer for {name} must be a 1-D uint8 tensor of at least {nbytes} bytes")
        data = torch.empty(nbytes, dtype=torch.uint8) if into is None else into[:nbytes]
        if nbytes:
            try:
                self._read_at(self._data_start + offset, nbytes, data.numpy().data)
            except (OSError, EOFError) as err:
                raise CheckpointError(
                    f"could not read tensor {name} from {self.path} (truncated or changed while being "
                    f"read?): {err}"
                ) from err
        return data

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def resolve_source(model: str | Path) -> Path:
    """The local directory of ``model``: an existing path, a demo alias (materialized), or a Hub
    id downloaded (safetensors weights and every other file but pickled or foreign weights).

    Raises:
        FileNotFoundError: a path that does not exist.
        OSError: a Hub id that cannot be downloaded or found in the cache (offline).
    """
    resolved = resolve_model_path(str(model))
    if Path(resolved).is_dir():
        return Path(resolved)
    from huggingface_hub import snapshot_download

    ignored = [f"*{suffix}" for suffix in PICKLE_SUFFIXES] + list(FOREIGN_WEIGHTS)
    logger.info("fetching %s from the Hugging Face Hub (or its cache)", resolved)
    try:
        return Path(snapshot_download(resolved, ignore_patterns=ignored))
    except Exception as exc:  # the Hub's errors have no common base but Exception
        raise OSError(
            f"could not download {resolved!r} from the Hugging Face Hub, nor find it in its cache "
            f"({' '.join(str(exc).split()) or type(exc).__name__}); pass a local checkpoint directory"
        ) from exc


def read_shards(directory: Path) -> list[Shard]:
    """The checkpoint's safetensors files (its index's, or ``model.safetensors``) and their
    tensors, read from the headers only.

    Raises:
        CheckpointError: no safetensors weights (pickle files are named, never read), an
            unreadable, truncated or missing file, a tensor name in two files, or an index that
            disagrees with the files (a tensor it maps to a file that lacks it, or a tensor in a
            file that the index does not list), naming the file and tensors.
    """
    index = _index_map(directory)
    shards = [_read_header(path) for path in weight_file_paths(directory)]
    seen: dict[str, Path] = {}
    for shard in shards:
        for info in shard.tensors:
            if info.name in seen:
                raise CheckpointError(f"tensor {info.name} is in both {seen[info.name]} and {shard.path}")
            seen[info.name] = shard.path
    if index is not None:
        _check_index(directory / INDEX_FILE, index, shards)
    return shards


def _index_map(directory: Path) -> dict[str, list[str]] | None:
    """File name -> tensor names, from ``model.safetensors.index.json`` (None without one).

    Raises:
        CheckpointError: an unreadable index, or one that lists a file that is missing (naming
            the file and the tensors the index puts in it).
    """
    path = directory / INDEX_FILE
    if not path.is_file():
        return None
    try:
        weight_map = json.loads(path.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a readable index with a 'weight_map': {err}") from err
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{path}: 'weight_map' must map tensor names to file names")
    by_file: dict[str, list[str]] = {}
    for name, file_name in weight_map.items():
        by_file.setdefault(str(file_name), []).append(str(name))
    for file_name, names in by_file.items():
        if Path(file_name).name == file_name and not (directory / file_name).is_file():
            raise CheckpointError(
                f"{path} maps {_listed(names)} to {file_name}, which is missing from {directory}"
            )
    return by_file


def _check_index(index_path: Path, index: dict[str, list[str]], shards: list[Shard]) -> None:
    """Every tensor the index lists is in its file, and every tensor of a file is listed."""
    for shard in shards:
        listed = set(index.get(shard.path.name, ()))
        present = {info.name for info in shard.tensors}
        absent = sorted(listed - present)
        if absent:
            raise CheckpointError(
                f"{index_path} maps {_listed(absent)} to {shard.path.name}, which does not hold "
                f"{'it' if len(absent) == 1 else 'them'} ({shard.path})"
            )
        unlisted = sorted(present - listed)
        if unlisted:
            raise CheckpointError(
                f"{shard.path} holds {_listed(unlisted)}, which {index_path.name} does not list: the "
                f"index and the file disagree; fix the index or the file"
            )


def _listed(names: list[str], shown: int = 5) -> str:
    """``tensor a`` / ``tensors a, b, c (and 4 more)``."""
    more = f" (and {len(names) - shown} more)" if len(names) > shown else ""
    return f"tensor{'s' if len(names) > 1 else ''} {', '.join(names[:shown])}{more}"


def _read_header(path: Path) -> Shard:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            views = {name: handle.get_slice(name) for name in list(handle.keys())}
            infos = [TensorInfo(n, tuple(v.get_shape()), v.get_dtype()) for n, v in views.items()]
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (corrupt or truncated?): {err}"
        ) from err
    return Shard(path, tuple(infos))


def copy_metadata(source: Path, target: Path) -> list[str]:
    """Copy the source's other top-level files (tokenizer, generation config, chat template,
    custom code, license...) into ``target``; returns their names.

    Weight files, ``config.json``, stale quantization configs, the model card and hidden files
    are left out. Hub snapshot files are symlinks into the cache: their contents are copied.
    """
    copied = []
    for path in metadata_files(source):
        shutil.copyfile(path, target / path.name)
        copied.append(path.name)
    return copied


def metadata_files(source: Path) -> list[Path]:
    """The files :func:`copy_metadata` copies, in name order."""
    return [path for path in sorted(source.iterdir()) if path.is_file() and not _left_out(path.name)]


def _left_out(name: str) -> bool:
    weights = name.endswith((".safetensors", ".safetensors.index.json", ".bin.index.json", *PICKLE_SUFFIXES))
    return weights or name in NOT_COPIED or name.startswith(".")
