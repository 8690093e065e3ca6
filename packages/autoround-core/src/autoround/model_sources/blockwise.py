"""A dense model loaded block by block from its safetensors (``low_cpu_mem_usage``).

:func:`load_blockwise` builds the model's modules with every parameter on the meta device
(buffers are real: rotary tables are computed, not stored), then reads the tensors outside the
decoder blocks (embeddings, final norm, ``lm_head``). A block's weights are read when its turn
comes (:meth:`BlockSource.load`) and go back to meta once it is done (:meth:`BlockSource.release`),
so memory holds the model's outer tensors and one block, not the model. The values are those
``from_pretrained`` gives: each tensor read from its file and cast to the parameter's dtype.

:func:`blockwise_problem` says why a checkpoint cannot be loaded this way (its tensor names are
not the model's: transformers renames or fuses them on loading, as for fused MoE experts), or
None when it can.
"""

from __future__ import annotations

import ctypes
import io
import json
import logging
import struct
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig, PreTrainedModel

from autoround.io import TORCH_DTYPES, weight_file_paths
from autoround.model_sources.demo import resolve_model_path
from autoround.model_sources.loading import check_dense_checkpoint
from autoround.modeling.blocks import find_block_names
from autoround.modeling.moe import unfuse_experts

logger = logging.getLogger(__name__)


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _glibc()
#: glibc's ``M_MMAP_THRESHOLD`` option, and the size from which a block-wise run's allocations get
#: their own mapping: glibc otherwise raises its threshold each time a large chunk is freed, so
#: the tuning loop's weight-sized temporaries land in its heap and stay counted in the RSS after
#: they are freed (about 80 MB of SmolLM2's low-memory peak, docs/low_memory.md).
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024
_SOURCES: weakref.WeakKeyDictionary[nn.Module, BlockSource] = weakref.WeakKeyDictionary()


@dataclass
class BlockSource:
    """Where a block-wise model's parameters come from: tensor name -> safetensors file."""

    model: weakref.ref[nn.Module]
    blocks: str
    files: dict[str, Path]
    #: Called on each block right after its weights are read (a finished run puts its
    #: quantized weights back from where it stored them: the resume store).
    overlay: Callable[[int, nn.Module], object] | None = None
    #: Whether the tensors outside the blocks are on meta (:meth:`release_outer`).
    outer_released: bool = False

    def _module(self) -> nn.Module:
        model = self.model()
        if model is None:
            raise RuntimeError("the block-wise model was freed")
        return model

    def block_names(self, index: int) -> list[str]:
        """The parameter names of block ``index`` (full names, as in the files)."""
        prefix = f"{self.blocks}.{index}."
        return [n for n, _ in self._module().named_parameters() if n.startswith(prefix)]

    def outer_names(self) -> list[str]:
        """The parameters outside the decoder blocks (tied aliases counted once)."""
        prefix = f"{self.blocks}."
        return [n for n, _ in self._module().named_parameters() if not n.startswith(prefix)]

    def __len__(self) -> int:
        return len(cast(nn.ModuleList, self._module().get_submodule(self.blocks)))

    def block(self, index: int) -> nn.Module:
        """Decoder block ``index`` of the model."""
        return cast(nn.ModuleList, self._module().get_submodule(self.blocks))[index]

    def load(self, index: int) -> None:
        """Read block ``index``'s weights from the files into the model (then :attr:`overlay`)."""
        _assign(self._module(), self.block_names(index), self.files)
        if self.overlay is not None:
            self.overlay(index, self.block(index))

    def release(self, index: int) -> None:
        """Put block ``index``'s parameters back on the meta device."""
        model = self._module()
        for name in self.block_names(index):
            _to_meta(model, name)
        _return_freed_memory()

    def load_outer(self) -> None:
        """Read the tensors outside the blocks (embeddings, final norm, ``lm_head``) again from
        the files, as :func:`load_blockwise` first read them; ties restored."""
        model = self._module()
        _assign(model, self.outer_names(), self.files)
        _tie(model)
        self.outer_released = False

    def release_outer(self) -> None:
        """Put the tensors outside the blocks back on meta (:meth:`load_outer` reads them again).
        A tuning walk needs them only to capture the first block's inputs; the fp32 embedding
        (with its tied ``lm_head``) is the largest tensor a small model holds besides one block."""
        model = self._module()
        for name in self.outer_names():
            _to_meta(model, name)
        _tie(model)  # else a tied lm_head keeps the old embedding alive
        self.outer_released = True
        _return_freed_memory()

    @contextmanager
    def loaded(self, index: int) -> Iterator[None]:
        """Block ``index``'s weights in memory inside the block, released after."""
        self.load(index)
        try:
            yield
        finally:
            self.release(index)


@dataclass(frozen=True)
class TuningResidency:
    """The :class:`~autoround.algorithms.base.BlockResidency` a block-wise tuning walk gets: the
    first block load releases the outer tensors (the walk has captured the first block's inputs
    by then and needs them no more); saving reads them again (:func:`resident_parts`)."""

    source: BlockSource

    def load(self, index: int) -> None:
        """Block ``index``'s weights in; the outer tensors out, if still in."""
        if not self.source.outer_released:
            self.source.release_outer()
        self.source.load(index)

    def release(self, index: int) -> None:
        """Block ``index``'s weights back to meta."""
        self.source.release(index)


def _to_meta(model: nn.Module, name: str) -> None:
    module, attr = _owner(model, name)
    old = module._parameters[attr]
    assert old is not None
    module._parameters[attr] = nn.Parameter(torch.empty_like(old, device="meta"), old.requires_grad)


def _tie(model: nn.Module) -> None:
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()


def _return_freed_memory() -> None:
    """Hand the freed block's memory back to the system. glibc keeps freed chunks below its
    (self-raising) mmap threshold in its heap: without this, each released block's memory stays
    counted in the process's RSS. Elsewhere than glibc a no-op."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def source_of(model: nn.Module) -> BlockSource | None:
    """The block source of a model :func:`load_blockwise` built; None for any other model."""
    return _SOURCES.get(model)


def resident_parts(model: nn.Module) -> Iterator[None]:
    """Walk ``model`` part by part, yielding once per part while it is in memory: once for a
    model held whole; for a block-wise one, once with its outer tensors, then once per decoder
    block with that block loaded (released when the walk moves on). Whoever takes tensors at
    each step takes those not on meta. The outer tensors are in memory for the first step only
    (read again if a tuning walk released them: :class:`TuningResidency`); the walk leaves them
    as it found them."""
    source = source_of(model)
    if source is None:
        yield
        return
    was_released = source.outer_released
    try:
        if was_released:
            source.load_outer()
        yield
        source.release_outer()  # the blocks' step needs them no more (the resume fingerprint's)
        for index in range(len(source)):
            with source.loaded(index):
                yield
    finally:
        if source.outer_released and not was_released:
            source.load_outer()
        elif was_released and not source.outer_released:
            source.release_outer()


def tensor_files(directory: Path) -> dict[str, Path]:
    """Every tensor name of a safetensors checkpoint directory -> its file (headers only)."""
    files: dict[str, Path] = {}
    for path in weight_file_paths(directory):
        if path.suffix != ".safetensors":
            continue
        with safe_open(str(path), "pt") as handle:
            files.update(dict.fromkeys(handle.keys(), path))
    return files


def empty_model(directory: Path, dtype: torch.dtype | None) -> PreTrainedModel:
    """The checkpoint's model with every parameter on meta (buffers computed), in ``dtype``
    (None: the checkpoint's), with its generation config, in eval mode."""
    from accelerate import init_empty_weights

    config = AutoConfig.from_pretrained(directory)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or getattr(config, "dtype", None))
    model.tie_weights()
    unfuse_experts(model)  # fused MoE experts as per-expert Linear layers: the checkpoint's names
    model.config._name_or_path = str(directory)
    model.name_or_path = str(directory)
    if (directory / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(directory)
    return cast(PreTrainedModel, model.eval())


def blockwise_problem(model: nn.Module, files: dict[str, Path]) -> str | None:
    """Why ``model`` cannot be read tensor by tensor from ``files``; None when it can."""
    if not files:
        return "the checkpoint has no safetensors files"
    for name, _ in model.named_parameters():
        if name not in files:
            return (
                f"the model's parameter {name} is not a tensor of the checkpoint "
                f"(transformers converts its tensors on loading)"
            )
    return None


def load_blockwise(directory: str | Path, dtype: torch.dtype | None) -> PreTrainedModel:
    """The model of the checkpoint ``directory`` with its outer tensors read and every decoder
    block on meta (see :class:`BlockSource`). ValueError when it cannot be read this way."""
    directory = Path(directory)
    model = empty_model(directory, dtype)
    files = tensor_files(directory)
    problem = blockwise_problem(model, files)
    if problem is not None:
        raise ValueError(f"{directory} cannot be loaded block by block: {problem}")
    blocks = find_block_names(model)[0]
    source = BlockSource(weakref.ref(model), blocks, files)
    _assign(model, source.outer_names(), files)
    model.tie_weights()
    _SOURCES[model] = source
    _map_large_allocations()
    logger.info("loaded %s block by block: %d blocks wait on meta", directory, len(source))
    return model


def _map_large_allocations() -> None:
    """From now on in this process, allocations of :data:`MMAP_THRESHOLD` bytes or more are
    mapped on their own and returned to the system when freed (glibc; elsewhere a no-op)."""
    if _LIBC is not None and _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1:
        logger.debug("allocations of %d bytes or more are mapped on their own", MMAP_THRESHOLD)


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    return model.get_submodule(module_name), attr


def _read(names: list[str], files: dict[str, Path], model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Each of ``names`` read from its file and cast to the model parameter's dtype, in order."""
    by_file: dict[Path, list[str]] = {}
    for name in names:
        by_file.setdefault(files[name], []).append(name)
    order = {name: i for i, name in enumerate(names)}
    read: list[tuple[str, torch.Tensor]] = []
    for path, group in by_file.items():
        for name, tensor in _read_file(path, group):
            module, attr = _owner(model, name)
            dtype = cast(torch.Tensor, getattr(module, attr)).dtype
            read.append((name, tensor if tensor.dtype == dtype else tensor.to(dtype)))
    yield from sorted(read, key=lambda item: order[item[0]])


def _read_file(path: Path, names: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
    """``names`` of one safetensors file, each read by plain file reads into a tensor of its own.

    Not safetensors' ``get_tensor``: it maps the file (the pages it touches count in the
    process's RSS while the file is open) and copies the bytes into a buffer, so a tensor cast
    afterwards was in memory three times at once (the 113 MB embedding of SmolLM2: the peak of
    loading). The values are the same bytes."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        for name in names:
            info = header[name]
            if info["dtype"] not in TORCH_DTYPES:
                with safe_open(str(path), "pt") as fallback:
                    yield name, fallback.get_tensor(name)
                continue
            start, end = info["data_offsets"]
            tensor = torch.empty(info["shape"], dtype=TORCH_DTYPES[info["dtype"]])
            handle.seek(8 + length + start)
            _read_into(handle, tensor.reshape(-1).view(torch.uint8).numpy().data, end - start, path)
            yield name, tensor


def _read_into(handle: io.BufferedReader, target: memoryview, nbytes: int, path: Path) -> None:
    done = 0
    while done < nbytes:
        got = handle.readinto(target[done:])
        if not got:
            raise OSError(f"{path} ended inside a tensor's data (truncated?)")
        done += got


def _assign(model: nn.Module, names: list[str], files: dict[str, Path]) -> None:
    for name, value in _read(names, files, model):
        module, attr = _owner(model, name)
        old: Any = module._parameters[attr]
        module._parameters[attr] = nn.Parameter(value, requires_grad=old.requires_grad)


def materialize(model: nn.Module) -> None:
    """Read every block of a block-wise model into memory: an ordinary model from then on."""
    source = _SOURCES.pop(model, None)
    if source is not None:
        if source.outer_released:
            source.load_outer()
        for index in range(len(source)):
            _assign(model, source.block_names(index), source.files)
        logger.info("read the remaining %d blocks: the model is held whole", len(source))


def checkpoint_problem(name_or_path: str | Path) -> str | None:
    """Why the checkpoint ``name_or_path`` names cannot be loaded block by block (None: it can)."""
    path = Path(resolve_model_path(str(name_or_path)))
    if not path.is_dir():
        return f"{name_or_path} is not a local checkpoint directory"
    try:
        model = empty_model(path, None)
    except (OSError, ValueError) as exc:
        return f"its model cannot be built from {path / 'config.json'} ({exc})"
    return blockwise_problem(model, tensor_files(path))


def load_blockwise_and_tokenizer(
    name_or_path: str | Path, dtype: torch.dtype | None
) -> tuple[PreTrainedModel, Any]:
    """:func:`load_blockwise` of the checkpoint ``name_or_path`` names (an alias or a local
    directory, checked as :func:`~autoround.model_sources.load_model_and_tokenizer` checks it)
    and its tokenizer."""
    path = Path(resolve_model_path(str(name_or_path)))
    check_dense_checkpoint(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return load_blockwise(path, dtype), tokenizer
