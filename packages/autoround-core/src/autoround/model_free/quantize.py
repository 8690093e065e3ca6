"""Model-free RTN: quantize a checkpoint's Linear weights tensor by tensor, without the model.

:func:`quantize_model_free` reads the checkpoint shard by shard, one tensor at a time with plain
file reads (:class:`~autoround.model_free.source.ShardReader`: no memory map, whose pages would
count in RSS), quantizes each planned Linear weight in blocks of rows
(:mod:`autoround.model_free.rounding`: the data type's round-to-nearest and the packing of the
model-based path, bit for bit its checkpoint), streams the ``auto_round`` shards to disk tensor
by tensor (:class:`~autoround.model_free.shards.ShardWriter`), then writes ``config.json`` with
the quantization config the model-based writer produces
(:func:`~autoround.formats.auto_round.quantization_config`), ``quantization_config.json`` and the
source's tokenizer and generation files. Everything is written into a temp directory beside the
output and renamed at the end, after a check that the filesystem has the room
(:mod:`autoround.model_free.space`). Memory: a few input tensors (one read ahead, one being
rounded, one being written) and the imports: 1.0-1.1 GiB peak RSS for the CLI on a Llama-3-8B
shape (docs/benchmarks.md).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from autoround.algorithms.rtn import RTN_RECORDED
from autoround.errors import CheckpointError, FormatError, OutputWriteError, SchemeError, UsageError
from autoround.formats.auto_round import packing_format_for, quantization_config
from autoround.formats.base import ZERO_OFFSET
from autoround.formats.preflight import check_schemes
from autoround.io import DEFAULT_MAX_SHARD_BYTES, NO_SPACE_ERRNOS, atomic_dir
from autoround.layer_plan import LayerConfig
from autoround.model_free.plan import CheckpointPlan, plan_checkpoint
from autoround.model_free.rounding import quantize_rows, row_blocks, row_workers
from autoround.model_free.routing import MODEL_FREE_FORMAT, format_problem, model_free_problem
from autoround.model_free.shards import ShardWriter, header_bytes_for
from autoround.model_free.source import (
    TORCH_DTYPES,
    Shard,
    ShardReader,
    TensorInfo,
    copy_metadata,
    read_shards,
    resolve_source,
)
from autoround.model_free.space import (
    PACKED_KEYS,
    check_space,
    metadata_bytes,
    output_bytes,
    with_space_needed,
)
from autoround.model_sources.loading import check_dense_checkpoint, read_config
from autoround.output_guard import check_output_dir
from autoround.schemes import Scheme, SchemeLike, parse_scheme

logger = logging.getLogger(__name__)

#: Tensors copied as they are (embeddings, an unquantized lm_head) larger than this go from the
#: input file to the output file in blocks of whole rows of at most this size.
STREAM_BLOCK_BYTES = 64 * 2**20
#: Writer calls that may wait while the next tensors are read and rounded.
WRITES_IN_FLIGHT = 2


@dataclass(frozen=True)
class ModelFreeResult:
    """Where the checkpoint was written, and its plan (``plan.layer_plan.quantized()``: the layers)."""

    path: Path
    plan: CheckpointPlan
    files: tuple[str, ...]


def quantize_model_free(
    model: str | Path,
    output_dir: str | Path,
    scheme: SchemeLike | None = "W4A16",
    *,
    layer_config: LayerConfig | None = None,
    ignore_layers: str | Sequence[str] = (),
    quant_lm_head: bool = False,
    format: str = MODEL_FREE_FORMAT,
    overwrite: bool = False,
    device: str | torch.device | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: bool = True,
    **scheme_overrides: Any,
) -> ModelFreeResult:
    """Quantize the checkpoint ``model`` (local directory, demo alias or Hub id) with RTN into an
    ``auto_round`` checkpoint at ``output_dir``, without building the model.

    The tensors are those :func:`autoround.quantize` (RTN) then :func:`autoround.save` would write
    from the loaded model, bit for bit. ``scheme`` and ``scheme_overrides`` (``bits``,
    ``group_size``, ``sym``) as in :func:`autoround.quantize`; ``ignore_layers``: Intel's
    comma-separated layer names or substrings kept in 16 bits; ``device``: where each weight is
    rounded (default: the CPU); output shards hold at most ``max_shard_bytes`` and one starts
    with each input shard.

    Raises (before anything is read or written, naming the bad value and what is allowed):
        FormatError: a format other than ``auto_round``.
        SchemeError: an unknown scheme, a non-integer one, bits the format cannot store, a plan
            that quantizes nothing or that vLLM's fused layers cannot take.
        UsageError / FileExistsError: an output inside the model, or a non-empty one without
            ``overwrite``.
        CheckpointError: no safetensors weights, a quantized checkpoint, unreadable files.
        UnsupportedLayerError: what this rule cannot quantize correctly (docs/model_free.md).
    """
    chosen = check_request(scheme, format, layer_config, scheme_overrides)
    output = Path(output_dir)
    _check_output(output, overwrite, model)
    source = resolve_source(model)
    check_output_dir(output, {"model": source})
    shards = read_shards(source)  # first: it names the tensors of an index entry without a file
    check_dense_checkpoint(source)
    config = read_config(source)
    plan = plan_checkpoint(shards, config, chosen, layer_config, ignore_layers, quant_lm_head)
    logger.info("model-free RTN of %s: %d layers to quantize", source, len(plan.layer_plan.quantized()))
    needed = output_bytes(shards, plan) + metadata_bytes(source)
    check_space(output, needed)
    try:
        with (
            atomic_dir(output, overwrite) as tmp,
            ShardWriter(tmp, max_shard_bytes) as writer,
            row_workers() as pool,
            _WriteQueue() as writes,
        ):
            packing = packing_format_for(chosen)
            job = _Job(plan, writer, ZERO_OFFSET[packing], device, pool, writes)
            for number, shard in enumerate(shards, start=1):
                label = f"{number}/{len(shards)}"
                writes.submit(setattr, writer, "header_reserve", header_bytes_for(_output_names(shard, plan)))
                _quantize_shard(shard, job, progress, label)
            writes.wait(0)
            files = writer.finish()
            routers = plan.dense_block_matrices
            qconfig = quantization_config(chosen, plan.layer_plan, RTN_RECORDED, routers, packing)
            _write_configs(config, qconfig, tmp)
            copy_metadata(source, tmp)
    except OutputWriteError as err:
        if err.errno not in NO_SPACE_ERRNOS:
            raise
        raise with_space_needed(err, needed, output) from err
    return ModelFreeResult(output, plan, tuple(files))


def check_request(
    scheme: SchemeLike | None, format: str, layer_config: LayerConfig | None, overrides: Mapping[str, Any]
) -> Scheme:
    """The scheme of a model-free request, refused (naming the value and what is allowed) when
    the format is not ``auto_round`` or a scheme is not an integer one the format stores."""
    if not isinstance(format, str) or format_problem(format) is not None:
        raise FormatError(
            f"{format_problem(str(format))}; for other formats quantize with the model loaded "
            f"(autoround.quantize + autoround.save, or the CLI with --disable_model_free)"
        )
    chosen = parse_scheme(scheme, **overrides)
    problem = model_free_problem(chosen, format, layer_config)
    if problem is not None:
        raise SchemeError(
            f"{problem}; for other schemes quantize with the model loaded (--disable_model_free)"
        )
    check_schemes(chosen, layer_config, (MODEL_FREE_FORMAT,))
    return chosen


def _check_output(output: Path, overwrite: bool, model: str | Path) -> None:
    """Refuse an output that exists and is not an empty directory (unless ``overwrite``), or that
    is, holds or lies inside a local model, before anything is downloaded."""
    check_output_dir(output, {"model": model if Path(model).expanduser().exists() else None})
    if output.exists() and not output.is_dir():
        raise UsageError(f"output path {output} exists and is not a directory; choose another output")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UsageError(
            f"output directory {output} exists and is not empty; pass overwrite=True (--overwrite) "
            f"to replace it"
        )


@dataclass(frozen=True)
class _Job:
    """What every tensor of a run goes through: the plan, the writer, the packing's zero offset,
    the device weights are rounded on, the threads that round row blocks side by side, and the
    queue every call of the writer goes through."""

    plan: CheckpointPlan
    writer: ShardWriter
    zero_offset: int
    device: str | torch.device | None
    pool: ThreadPoolExecutor | None
    writes: _WriteQueue


class _WriteQueue:
    """One thread that makes every call of the writer, in the order they were submitted (so the
    output does not depend on timing) while the caller reads and rounds the next tensors; at most
    :data:`WRITES_IN_FLIGHT` calls wait (the caller waits beyond that). A call's error is raised
    to the caller at its next submit or wait; on leaving, calls not started are dropped."""

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-free-write")
        self._pending: deque[Future[Any]] = deque()

    def submit(self, call: Callable[..., Any], *args: Any) -> None:
        self._pending.append(self._thread.submit(call, *args))
        self.wait(WRITES_IN_FLIGHT)

    def wait(self, left: int) -> None:
        """Wait for the oldest calls until ``left`` remain (raising a call's error)."""
        while len(self._pending) > left:
            self._pending.popleft().result()

    def __enter__(self) -> _WriteQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)


def _quantize_shard(shard: Shard, job: _Job, progress: bool, label: str) -> None:
    """Every tensor of one input shard to the write queue, then the end of a shard.

    A reading thread reads the next tensor while this thread rounds the current one, and the
    write queue writes the results before it. Memory holds one tensor read ahead, one being
    rounded and the results of at most :data:`WRITES_IN_FLIGHT` more. Tensors kept as they are
    and larger than :data:`STREAM_BLOCK_BYTES` are copied by the write queue in row blocks.
    """
    try:
        handle = ShardReader(shard.path)
    except OSError as err:
        raise CheckpointError(f"could not open {shard.path}: {err}") from err
    tensors = shard.tensors
    inline = [i for i, info in enumerate(tensors) if not _streamed(info, job.plan)]
    following = dict(itertools.pairwise(inline))  # each tensor read whole -> the next one
    buffers = _ReadBuffers(job.plan)
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-free-read")
    with handle as opened:
        try:
            reads: dict[int, Future[torch.Tensor]] = {}
            desc = f"model-free RTN, shard {label}"
            for index, info in enumerate(tqdm(tensors, desc=desc, unit="tensor", disable=not progress)):
                if _streamed(info, job.plan):
                    job.writes.submit(_copy_in_blocks, job.writer, shard.path, info)
                    continue
                ahead = reads.pop(index, None)
                tensor = ahead.result() if ahead is not None else buffers.read(opened, info)
                if index in following:
                    reads[following[index]] = reader.submit(buffers.read, opened, tensors[following[index]])
                outputs = _outputs(info.name, tensor, job)
                del tensor, ahead
                job.writes.submit(_write, job.writer, outputs)
                del outputs
        finally:
            reader.shutdown(wait=True, cancel_futures=True)
    job.writes.submit(job.writer.end_shard)


def _copy_in_blocks(writer: ShardWriter, path: Path, info: TensorInfo) -> None:
    """A tensor kept as it is, copied from its file (opened anew: the shard's reader may be closed
    by then) to the writer a block of rows at a time."""
    with ShardReader(path) as reader:
        blocks = reader.get_row_blocks(info.name, STREAM_BLOCK_BYTES)
        writer.add_blocks(info.name, TORCH_DTYPES[info.dtype], info.shape, blocks)


class _ReadBuffers:
    """Two byte buffers that the weights to quantize are read into by turns (the one read ahead
    and the one being rounded; a weight's buffer is free once its packed tensors exist). Other
    tensors are read into memory of their own, since the writer keeps them."""

    def __init__(self, plan: CheckpointPlan) -> None:
        self.plan = plan
        self.buffers: list[torch.Tensor | None] = [None, None]
        self.turn = 0

    def read(self, reader: ShardReader, info: TensorInfo) -> torch.Tensor:
        if info.name not in self.plan.weights:
            return reader.get_tensor(info.name)
        nbytes = reader.nbytes(info.name)
        slot, self.turn = self.turn, 1 - self.turn
        buffer = self.buffers[slot]
        if buffer is None or buffer.numel() < nbytes:
            self.buffers[slot] = buffer = None  # let the old one go first
            buffer = self.buffers[slot] = torch.empty(nbytes, dtype=torch.uint8)
        return reader.get_tensor(info.name, into=buffer)


def _write(writer: ShardWriter, outputs: list[tuple[str, torch.Tensor]]) -> None:
    for name, tensor in outputs:
        writer.add(name, tensor)


def _streamed(info: TensorInfo, plan: CheckpointPlan) -> bool:
    """Whether the tensor goes to the output as it is and is large enough to be copied in blocks."""
    name, dtype = info.name, TORCH_DTYPES.get(info.dtype)
    kept = name not in plan.weights and name not in plan.dropped and name not in plan.fp16_biases
    return kept and dtype is not None and math.prod(info.shape) * dtype.itemsize > STREAM_BLOCK_BYTES


def _output_names(shard: Shard, plan: CheckpointPlan) -> list[str]:
    """The names the output gets from one input shard (to size its files' headers)."""
    names: list[str] = []
    for info in shard.tensors:
        if info.name in plan.weights:
            layer = plan.weights[info.name][0]
            names += [f"{layer}.{key}" for key in PACKED_KEYS]
        elif info.name not in plan.dropped:
            names.append(info.name)
    return names


@torch.no_grad()
def _outputs(name: str, tensor: torch.Tensor, job: _Job) -> list[tuple[str, torch.Tensor]]:
    """What one input tensor becomes in the output: a planned weight quantized and packed (as
    the model-based RTN and writer do, row block by row block), a quantized layer's bias as
    float16, a dropped one nothing, anything else itself."""
    plan = job.plan
    if name in plan.dropped:
        return []
    if name in plan.fp16_biases:
        return [(name, tensor.to(torch.float16))]
    if name not in plan.weights:
        return [(name, tensor)]
    layer, scheme = plan.weights[name]

    def one_block(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return quantize_rows(rows.to(job.device) if job.device is not None else rows, scheme, job.zero_offset)

    blocks = row_blocks(tensor, scheme)
    results = (
        list(job.pool.map(one_block, blocks)) if job.pool and len(blocks) > 1 else map(one_block, blocks)
    )
    parts: dict[str, list[torch.Tensor]] = {}
    for result in results:
        for key, packed in result.items():
            parts.setdefault(key, []).append(packed)
    return [(f"{layer}.{key}", c[0] if len(c) == 1 else torch.cat(c, dim=1)) for key, c in parts.items()]


def _write_configs(config: Mapping[str, Any], qconfig: dict[str, Any], directory: Path) -> None:
    """``config.json`` (the source's, with ``quantization_config``) and ``quantization_config.json``."""
    data = {**config, "quantization_config": qconfig}
    (directory / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (directory / "quantization_config.json").write_text(json.dumps(qconfig, indent=2) + "\n")
