"""Safetensors output streamed to disk tensor by tensor, named as
:func:`autoround.io.save_safetensors_sharded` names them once the count is known.

Each tensor's bytes go to the open shard file as soon as :meth:`ShardWriter.add` gets it, so
memory holds one tensor, not a shard. A safetensors file starts with its JSON header, which lists
every tensor's offsets; the writer leaves room for it (``header_reserve`` bytes, which the caller
may size for the tensors it expects) and writes it last, padded with spaces as the format
allows. A header that outgrows its room is written to a new file followed by a copy of the data.
A new file starts when the next tensor would pass ``max_shard_bytes`` or the caller ends the shard
(model-free RTN ends one with each input shard). :meth:`ShardWriter.finish` renames the one file
to ``model.safetensors``, or several to ``model-0000i-of-0000N.safetensors`` beside
``model.safetensors.index.json`` (Hugging Face's layout, as the model-based writer produces it).

Alignment, as safetensors' own writer keeps it: the data starts at a multiple of 8 bytes and
tensors of a multiple of 8 bytes are written in arrival order, so each starts at a multiple of 8;
the others (rare: odd-sized 1-, 2- or 4-byte tensors) wait in memory and end the file, largest
element size first, so every tensor starts at a multiple of its element size.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import torch

from autoround.io import INDEX_FILE, SINGLE_FILE, shard_file_names, write_error, write_safetensors
from autoround.model_free.source import TORCH_DTYPES

#: Header metadata of every file (transformers refuses files without ``format: pt``).
HEADER = {"format": "pt"}
#: Room left for a file's header when the caller does not say.
DEFAULT_HEADER_RESERVE = 64 * 1024
#: safetensors' dtype names of torch dtypes.
SAFETENSORS_DTYPES = {dtype: name for name, dtype in TORCH_DTYPES.items()}
_ALIGN = 8


def header_bytes_for(names: list[str], max_dims: int = 2) -> int:
    """Room for a header listing ``names`` (tensors of at most ``max_dims`` dimensions)."""
    per_entry = 120 + 21 * max_dims  # {"dtype":"BF16","shape":[...],"data_offsets":[a,b]} and quotes
    return 256 + sum(len(name.encode()) + per_entry for name in names)


class _OpenShard:
    """One output file being written: data after a reserved header, header written at close."""

    def __init__(self, path: Path, reserve: int) -> None:
        self.path = path
        self.reserve = -(-reserve // _ALIGN) * _ALIGN
        self.entries: dict[str, tuple[str, list[int], int, int]] = {}
        self.deferred: list[tuple[str, torch.Tensor]] = []
        self.offset = 0
        self.file: BinaryIO | None = None
        self.file = self._io(lambda: open(path, "wb"))  # noqa: SIM115 (closed in close/abort)
        self._io(lambda: self._handle().seek(8 + self.reserve))

    def _handle(self) -> BinaryIO:
        assert self.file is not None
        return self.file

    def _io(self, call):
        try:
            return call()
        except OSError as err:
            raise write_error(self.path, err) from err

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if tensor.numel() * tensor.element_size() % _ALIGN:
            self.deferred.append((name, tensor))
        else:
            self._write(name, tensor)

    def add_blocks(
        self, name: str, dtype: torch.dtype, shape: tuple[int, ...], blocks: Iterable[torch.Tensor]
    ) -> None:
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes % _ALIGN:
            self.deferred.append((name, torch.cat(list(blocks)).reshape(shape)))
            return
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: dtype {dtype} cannot be stored in safetensors")
        written = 0
        for block in blocks:
            if block.dtype != dtype:
                raise ValueError(f"{name}: a block of dtype {block.dtype} in a {dtype} tensor")
            self._write_bytes(block)
            written += block.numel() * block.element_size()
        if written != nbytes:
            raise ValueError(
                f"{name}: blocks of {written} bytes for a tensor of shape {shape} ({nbytes} bytes)"
            )
        self.entries[name] = (SAFETENSORS_DTYPES[dtype], list(shape), self.offset, self.offset + nbytes)
        self.offset += nbytes

    def _write(self, name: str, tensor: torch.Tensor) -> None:
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: dtype {tensor.dtype} cannot be stored in safetensors")
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes:
            self._write_bytes(tensor)
        dtype = SAFETENSORS_DTYPES[tensor.dtype]
        self.entries[name] = (dtype, list(tensor.shape), self.offset, self.offset + nbytes)
        self.offset += nbytes

    def _write_bytes(self, tensor: torch.Tensor) -> None:
        data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data
        self._io(lambda: self._handle().write(data))

    @property
    def empty(self) -> bool:
        return not self.entries and not self.deferred

    def close(self) -> None:
        """Write the waiting tensors and the header; the file is complete."""
        for name, tensor in sorted(self.deferred, key=lambda item: -item[1].element_size()):
            self._write(name, tensor)
        self.deferred = []
        header: dict[str, object] = {"__metadata__": HEADER}
        for name in sorted(self.entries):
            dtype, shape, start, end = self.entries[name]
            header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % _ALIGN)
        handle = self._handle()
        if len(raw) <= self.reserve:
            raw += b" " * (self.reserve - len(raw))
            self._io(lambda: (handle.seek(0), handle.write(len(raw).to_bytes(8, "little") + raw)))
            self._finish_file(handle)
            return
        self._finish_file(handle)
        self._rewrite_with(raw)

    def _finish_file(self, handle: BinaryIO) -> None:
        self.file = None
        self._io(handle.close)

    def _rewrite_with(self, raw: bytes) -> None:
        """The header outgrew its room: a new file with the header, then the data copied."""
        wider = self.path.with_name(self.path.name + ".wide")
        try:
            with open(self.path, "rb") as source, open(wider, "wb") as target:
                target.write(len(raw).to_bytes(8, "little") + raw)
                source.seek(8 + self.reserve)
                shutil.copyfileobj(source, target, 16 * 2**20)
            os.replace(wider, self.path)
        except OSError as err:
            wider.unlink(missing_ok=True)
            raise write_error(self.path, err) from err

    def abort(self) -> None:
        """Close the file without completing it (the caller removes the directory)."""
        if self.file is not None:
            handle, self.file = self.file, None
            handle.close()


class ShardWriter:
    """Streams named tensors into safetensors files in ``directory``, a shard at a time.

    Use it as a context manager (or call :meth:`close`) so an open file is closed on an error.
    """

    def __init__(
        self, directory: Path, max_shard_bytes: int, header_reserve: int = DEFAULT_HEADER_RESERVE
    ) -> None:
        if max_shard_bytes <= 0:
            raise ValueError(f"max_shard_bytes must be a positive number of bytes, got {max_shard_bytes}")
        self.directory = directory
        self.max_shard_bytes = max_shard_bytes
        #: Room left for the header of the next file opened (callers may set it per shard).
        self.header_reserve = header_reserve
        self._open: _OpenShard | None = None
        self._open_bytes = 0
        self._written: list[tuple[Path, list[str]]] = []
        self._total_bytes = 0
        self._names: set[str] = set()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending_bytes(self) -> int:
        """Bytes of the tensors held in memory (those that wait to end their file)."""
        if self._open is None:
            return 0
        return sum(t.numel() * t.element_size() for _, t in self._open.deferred)

    @property
    def shard_bytes(self) -> int:
        """Bytes of tensor data in the file being written."""
        return self._open_bytes

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Write ``tensor`` under ``name`` into the open file; a new file starts first if this one
        would pass ``max_shard_bytes`` (a tensor larger than that gets a file of its own)."""
        tensor = tensor.detach().to("cpu").contiguous()
        self._claim(name, tensor.numel() * tensor.element_size()).add(name, tensor)

    def _claim(self, name: str, nbytes: int) -> _OpenShard:
        """The file ``nbytes`` more of tensor ``name`` go to: the open one, or a new one when they
        would take it past ``max_shard_bytes`` (a tensor larger than that gets a file of its own)."""
        if name in self._names:
            raise ValueError(f"tensor {name} was written twice")
        self._names.add(name)
        if (
            self._open is not None
            and not self._open.empty
            and self._open_bytes + nbytes > self.max_shard_bytes
        ):
            self.end_shard()
        if self._open is None:
            path = self.directory / f".part-{len(self._written):05d}.safetensors"
            self._open = _OpenShard(path, self.header_reserve)
            self._open_bytes = 0
        self._open_bytes += nbytes
        self._total_bytes += nbytes
        return self._open

    def add_blocks(
        self, name: str, dtype: torch.dtype, shape: tuple[int, ...], blocks: Iterable[torch.Tensor]
    ) -> None:
        """Write the tensor ``name`` of ``dtype`` and ``shape`` from ``blocks``, consecutive pieces
        of it in memory order (row blocks), as :meth:`add` writes a whole tensor: memory holds one
        block."""
        self._claim(name, math.prod(shape) * dtype.itemsize).add_blocks(name, dtype, shape, blocks)

    def end_shard(self) -> None:
        """Complete the file being written (nothing when none is open)."""
        if self._open is None:
            return
        shard, self._open = self._open, None
        try:
            shard.close()
        finally:
            shard.abort()
        self._written.append((shard.path, list(shard.entries)))

    def close(self) -> None:
        """Close an open file without completing it (after an error; a no-op once finished)."""
        if self._open is not None:
            self._open.abort()
            self._open = None

    def finish(self) -> list[str]:
        """Complete the open file, give the files their final names (and the index when there
        are several); returns the file names."""
        self.end_shard()
        count = len(self._written)
        if count == 0:
            write_safetensors({}, self.directory / SINGLE_FILE, HEADER)
            return [SINGLE_FILE]
        names = shard_file_names(count)
        weight_map: dict[str, str] = {}
        for (path, keys), name in zip(self._written, names, strict=True):
            path.rename(self.directory / name)
            weight_map.update(dict.fromkeys(keys, name))
        if count > 1:
            index = {
                "metadata": {"total_size": self._total_bytes},
                "weight_map": dict(sorted(weight_map.items())),
            }
            try:
                (self.directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
            except OSError as err:
                raise write_error(self.directory / INDEX_FILE, err) from err
        return names
