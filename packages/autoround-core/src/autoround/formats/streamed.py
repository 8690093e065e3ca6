"""A checkpoint's weight files assembled part by part, never holding all its tensors at once.

A model loaded block by block (``low_cpu_mem_usage``) is written this way: each part's tensors
(the outer ones, then one block's packed layers) are spilled to a safetensors file of their own
(:meth:`PartSpill.add`) and freed; the weight files are then assembled from those files in the
order and shards :func:`autoround.io.save_safetensors_sharded` gives, their bytes copied in
pieces (:func:`write_sharded`). The files are the ones ``save_safetensors_sharded`` writes from
the same tensors, byte for byte: safetensors' own serializer orders each file's tensors (it is
asked, on one-element stand-ins), and the header is written as it writes it.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors.torch import save as serialize

from autoround.io import (
    INDEX_FILE,
    _plan_shards,
    _prepare_shard,
    shard_file_names,
    write_error,
    write_safetensors,
)

_HEADER = {"format": "pt"}  # what save_safetensors_sharded puts in every file
_PIECE = 16 << 20  # bytes copied at a time


@dataclass(frozen=True)
class Spilled:
    """One tensor lying in a spill file: its dtype, shape and where its bytes are."""

    path: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    nbytes: int

    def stand_in(self) -> torch.Tensor:
        """A tensor of this dtype and shape on meta (its size, without its bytes)."""
        return torch.empty(self.shape, dtype=self.dtype, device="meta")


class PartSpill:
    """The spilled parts of one checkpoint, in a folder of their own (removed by :meth:`close`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        self.tensors: dict[str, Spilled] = {}

    def add(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write one part's tensors to a file of the folder; only where they lie is kept."""
        if not tensors:
            return
        path = self.folder / f"part-{len(list(self.folder.iterdir())):05d}.safetensors"
        prepared = _prepare_shard(tensors, list(tensors))
        write_safetensors(prepared, path, _HEADER)
        header, base = _read_header(path)
        for name, tensor in prepared.items():
            start, end = header[name]["data_offsets"]
            self.tensors[name] = Spilled(path, tensor.dtype, tuple(tensor.shape), base + start, end - start)

    def close(self) -> None:
        """Remove the folder and its files."""
        shutil.rmtree(self.folder, ignore_errors=True)


def write_sharded(tensors: dict[str, Spilled], directory: Path, max_shard_bytes: int) -> list[str]:
    """:func:`autoround.io.save_safetensors_sharded` of the spilled ``tensors`` (in this order),
    copying their bytes file to file; the same files, the same errors."""
    stale = sorted(p.name for p in directory.glob("model*.safetensors*"))
    if stale:
        raise FileExistsError(
            f"{directory} already holds weight files {stale}; write into an empty directory"
        )
    sizes = {name: spilled.stand_in() for name, spilled in tensors.items()}
    shards = _plan_shards(sizes, max_shard_bytes)
    names = shard_file_names(len(shards))
    written: list[Path] = []
    try:
        for file_name, keys in zip(names, shards, strict=True):
            written.append(directory / file_name)
            _write_file({k: tensors[k] for k in keys}, directory / file_name)
        if len(shards) > 1:
            weight_map = {key: name for name, keys in zip(names, shards, strict=True) for key in keys}
            index = {
                "metadata": {"total_size": sum(s.nbytes for s in tensors.values())},
                "weight_map": dict(sorted(weight_map.items())),
            }
            written.append(directory / INDEX_FILE)
            _write_text(directory / INDEX_FILE, json.dumps(index, indent=2) + "\n")
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return names


def _write_file(tensors: dict[str, Spilled], path: Path) -> None:
    """One safetensors file: the header ``save_file`` would write, then each tensor's bytes."""
    order = _serialized_order(tensors)
    entries: dict[str, object] = {"__metadata__": _HEADER}
    offset = 0
    for name, dtype_name in order:
        spilled = tensors[name]
        entries[name] = {
            "dtype": dtype_name,
            "shape": list(spilled.shape),
            "data_offsets": [offset, offset + spilled.nbytes],
        }
        offset += spilled.nbytes
    header = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode()
    header += b" " * ((8 - len(header) % 8) % 8)  # safetensors pads the header to 8 bytes
    try:
        with open(path, "wb") as out:
            out.write(struct.pack("<Q", len(header)) + header)
            buffer = bytearray(_PIECE)
            for name, _ in order:
                _copy(tensors[name], out, buffer)
    except OSError as err:
        raise write_error(path, err) from err


def _serialized_order(tensors: dict[str, Spilled]) -> list[tuple[str, str]]:
    """The order safetensors lays these tensors out in (by dtype, then name), with the dtype
    name it writes for each, asked of its own serializer on one-element stand-ins."""
    stand_ins = {name: torch.zeros(1, dtype=spilled.dtype) for name, spilled in tensors.items()}
    data = serialize(stand_ins, metadata=_HEADER)
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header.pop("__metadata__", None)
    order = sorted(header, key=lambda name: header[name]["data_offsets"][0])
    return [(name, header[name]["dtype"]) for name in order]


def _copy(spilled: Spilled, out: BinaryIO, buffer: bytearray) -> None:
    view = memoryview(buffer)
    with open(spilled.path, "rb") as source:
        source.seek(spilled.start)
        left = spilled.nbytes
        while left:
            got = source.readinto(view[: min(left, len(buffer))])
            if not got:
                raise OSError(f"{spilled.path} ended early")
            out.write(view[:got])
            left -= got


def _read_header(path: Path) -> tuple[dict[str, dict[str, list[int]]], int]:
    """A safetensors file's header and where its data starts."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as err:
        raise write_error(path, err) from err
