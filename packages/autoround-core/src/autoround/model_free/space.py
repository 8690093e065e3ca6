"""How much space a model-free checkpoint needs, counted before anything is written, and the
full-disk errors that say so.

:func:`output_bytes` is exact for the tensor data (packed weights at their stored shapes,
:func:`~autoround.formats.gptq_layout.expected_shapes`); headers, ``config.json``,
``quantization_config.json`` and the copied tokenizer files are added by :func:`metadata_bytes`.
"""

from __future__ import annotations

import errno
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from autoround.errors import OutputWriteError
from autoround.formats.gptq_layout import expected_shapes
from autoround.io import NO_SPACE_HINT
from autoround.model_free.plan import CheckpointPlan
from autoround.model_free.source import Shard, metadata_files

#: The tensors a quantized layer is stored as, and their element sizes (int32 codes, fp16 scales).
PACKED_BYTES = {"qweight": 4, "qzeros": 4, "scales": 2}
PACKED_KEYS = tuple(PACKED_BYTES)
#: Element sizes of safetensors dtypes.
DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2}
DTYPE_BYTES |= {"U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
#: Room counted for safetensors headers, config.json and quantization_config.json.
METADATA_SLACK = 4 * 2**20


def output_bytes(shards: Sequence[Shard], plan: CheckpointPlan) -> int:
    """Bytes of tensor data the output checkpoint holds (headers, configs and copied files
    excluded): packed weights at their stored size, everything else as read (biases of quantized
    layers in float16)."""
    total = 0
    for shard in shards:
        for info in shard.tensors:
            count = math.prod(info.shape)
            if info.name in plan.dropped:
                continue
            if info.name in plan.fp16_biases:
                total += 2 * count
            elif info.name in plan.weights:
                scheme = plan.weights[info.name][1]
                out_features, in_features = info.shape
                shapes = expected_shapes(scheme, in_features, out_features)
                total += sum(PACKED_BYTES[key] * math.prod(shape) for key, shape in shapes.items())
            else:
                total += DTYPE_BYTES.get(info.dtype, 8) * count
    return total


def metadata_bytes(source: Path) -> int:
    """Bytes of the source files copied beside the weights, plus room for headers and configs."""
    return sum(path.stat().st_size for path in metadata_files(source)) + METADATA_SLACK


def check_space(output: Path, needed: int) -> None:
    """Refuse, before anything is written, an output whose filesystem has less room than the
    checkpoint needs."""
    probe = output if output.exists() else output.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return  # no figure to check against: the writes will tell
    if free < needed:
        err = OutputWriteError(
            f"not enough space for {output}: the checkpoint needs about {_size(needed)} and "
            f"{probe} has {_size(free)} free; {NO_SPACE_HINT}"
        )
        err.errno = errno.ENOSPC
        raise err


def with_space_needed(err: OutputWriteError, needed: int, output: Path) -> OutputWriteError:
    """The full-disk error, saying how much space the whole checkpoint needs."""
    probe = output.parent if output.parent.exists() else Path(".")
    try:
        free = f", {_size(shutil.disk_usage(probe).free)} free now"
    except OSError:
        free = ""
    out = OutputWriteError(f"{err} (the checkpoint needs about {_size(needed)}{free}; nothing was kept)")
    out.errno = err.errno
    return out


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
