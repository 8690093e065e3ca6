"""Safetensors output written shard by shard as it fills, named as
:func:`autoround.io.save_safetensors_sharded` names them once the count is known.

Tensors wait in memory until the shard would pass ``max_shard_bytes`` or the caller ends it
(model-free RTN ends one with each input shard); the shard is then written under a temporary
name. :meth:`ShardWriter.finish` renames the one file to ``model.safetensors``, or several to
``model-0000i-of-0000N.safetensors`` beside ``model.safetensors.index.json`` (Hugging Face's
layout, as the model-based writer produces it).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from autoround.io import INDEX_FILE, SINGLE_FILE, write_error, write_safetensors

#: Header metadata of every file (transformers refuses files without ``format: pt``).
HEADER = {"format": "pt"}


class ShardWriter:
    """Collects named tensors and writes them into ``directory`` a shard at a time."""

    def __init__(self, directory: Path, max_shard_bytes: int) -> None:
        if max_shard_bytes <= 0:
            raise ValueError(f"max_shard_bytes must be a positive number of bytes, got {max_shard_bytes}")
        self.directory = directory
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._written: list[tuple[Path, list[str]]] = []
        self._total_bytes = 0
        self._names: set[str] = set()

    @property
    def pending_bytes(self) -> int:
        """Bytes of the tensors held in memory for the shard being filled."""
        return self._pending_bytes

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Queue ``tensor`` under ``name``; the shard so far is written first if it would overflow."""
        if name in self._names:
            raise ValueError(f"tensor {name} was written twice")
        self._names.add(name)
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self.end_shard()
        self._pending[name] = tensor.detach().to("cpu").contiguous()
        self._pending_bytes += nbytes
        self._total_bytes += nbytes

    def end_shard(self) -> None:
        """Write the tensors queued so far as one file (nothing when none are queued)."""
        if not self._pending:
            return
        path = self.directory / f".part-{len(self._written):05d}.safetensors"
        write_safetensors(self._pending, path, HEADER)
        self._written.append((path, list(self._pending)))
        self._pending = {}
        self._pending_bytes = 0

    def finish(self) -> list[str]:
        """Write what is queued, give the files their final names (and the index when there are
        several); returns the file names."""
        self.end_shard()
        count = len(self._written)
        if count <= 1:
            names = [SINGLE_FILE]
        else:
            names = [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
        weight_map: dict[str, str] = {}
        for (path, keys), name in zip(self._written, names, strict=False):
            path.rename(self.directory / name)
            weight_map.update(dict.fromkeys(keys, name))
        if count == 0:
            write_safetensors({}, self.directory / SINGLE_FILE, HEADER)
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
