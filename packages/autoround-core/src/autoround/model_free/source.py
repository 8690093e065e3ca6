"""Where a model-free run reads from: a local checkpoint directory, a demo alias or a Hub id
(downloaded with ``huggingface_hub.snapshot_download``, safetensors and metadata only), and what
its safetensors headers say: every tensor's name, shape and dtype, shard by shard, without
reading a tensor."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from autoround.errors import CheckpointError
from autoround.io import PICKLE_SUFFIXES, weight_file_paths
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
            unreadable file, or a tensor name in two files.
    """
    shards = [_read_header(path) for path in weight_file_paths(directory)]
    seen: dict[str, Path] = {}
    for shard in shards:
        for info in shard.tensors:
            if info.name in seen:
                raise CheckpointError(f"tensor {info.name} is in both {seen[info.name]} and {shard.path}")
            seen[info.name] = shard.path
    return shards


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
    for path in sorted(source.iterdir()):
        if not path.is_file() or _left_out(path.name):
            continue
        shutil.copyfile(path, target / path.name)
        copied.append(path.name)
    return copied


def _left_out(name: str) -> bool:
    weights = name.endswith((".safetensors", ".safetensors.index.json", ".bin.index.json", *PICKLE_SUFFIXES))
    return weights or name in NOT_COPIED or name.startswith(".")
