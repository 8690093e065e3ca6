"""The one strict check of a checkpoint's tensors against the model that will hold them.

Every loader (core :func:`~autoround.loading.load_quantized` and
:func:`~autoround.loading.load_dense`, autoround-hf's quantizer) builds the empty model first
(quantized Linears replaced by empty :class:`QuantLinear` layers in the layout stored on disk,
MoE experts unfused), then calls :func:`check_checkpoint_tensors` with the safetensors headers
before any tensor is read. The empty model's state dict is the specification: each of its
tensors must be in the files with its shape, packed tensors with their exact dtype, and each
tensor of the files must have a place in it. transformers' own MISSING / UNEXPECTED report
only warns and initialises what is missing at random, so it is never relied on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from autoround.errors import CheckpointError
from autoround.nn import FloatQuantLinear, PackedLinear, QuantLinear

#: The tensors of a packed layer; a file holding one for a layer the config leaves dense is refused.
PACKED_LEAVES = ("qweight", "qzeros", "scales")
#: The tensors of a float layer (Intel's MX / NV / FP8 layouts, calibrated activation scales) that a
#: dense layer never has.
FLOAT_LEAVES = ("weight_packed", "weight_scale", "weight_global_scale", "input_scale", "input_global_scale")

#: safetensors header dtype codes, as torch dtypes.
_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class StoredTensor:
    """What a safetensors header says of one tensor, and the file that holds it."""

    dtype: torch.dtype | str
    shape: tuple[int, ...]
    file: Path


def read_headers(files: Iterable[Path]) -> dict[str, StoredTensor]:
    """Name → dtype, shape and file of every tensor in ``files``, read from the headers only.

    Raises:
        CheckpointError: a file is not readable safetensors (named), or two files hold one name.
    """
    found: dict[str, StoredTensor] = {}
    for path in map(Path, files):
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    part = handle.get_slice(name)
                    dtype = _DTYPES.get(part.get_dtype(), part.get_dtype())
                    if name in found:
                        raise CheckpointError(f"{name} is in both {found[name].file} and {path}")
                    found[name] = StoredTensor(dtype, tuple(part.get_shape()), path)
        except (SafetensorError, OSError) as err:
            raise CheckpointError(
                f"{path} is not a readable safetensors file (corrupt or truncated?): {err}"
            ) from err
    return found


def check_checkpoint_tensors(
    model: nn.Module,
    stored: dict[str, StoredTensor],
    ignored: Sequence[str] = (),
) -> None:
    """Refuse, naming the first tensor at fault, files that do not fill ``model`` exactly.

    ``model`` is the empty (meta) model ready for loading; ``ignored`` are regular expressions of
    file tensors that may be dropped (GPTQ's trivial ``g_idx``). Tensors transformers ties to
    another one (a tied ``lm_head``) may be absent.

    Raises:
        CheckpointError: a tensor of the files with no place in the model (a packed one for a
            layer config.json leaves unquantized is said so), a packed tensor of the wrong dtype,
            any tensor of the wrong shape, or a tensor of the model missing from the files.
    """
    expected = model.state_dict(keep_vars=True)
    patterns = [re.compile(p) for p in ignored]
    for key, tensor in stored.items():
        if key not in expected and not any(p.search(key) for p in patterns):
            raise CheckpointError(_unplaced(key, tensor, model))
    layers = _quantized_layers(model)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = []
    for key, target in expected.items():  # in module order: the first layer at fault is named
        if key in stored:
            _check_one(key, stored[key], target, layers.get(key))
        elif key not in tied:
            missing.append(key)
    if missing:
        files = sorted({str(t.file) for t in stored.values()}) or ["the checkpoint"]
        where = files[0] if len(files) == 1 else f"the {len(files)} shards {files}"
        raise CheckpointError(f"{missing[0]} is missing from {where} ({len(missing)} tensor(s) missing)")


def _quantized_layers(model: nn.Module) -> dict[str, PackedLinear]:
    """Tensor name → the layer that holds it, for tensors whose dtype is the layout's own
    (every packed integer tensor; a float layer's codes, E8M0 / FP8 scales and global scale)."""
    found: dict[str, PackedLinear] = {}
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            found.update({f"{name}.{leaf}": module for leaf in PACKED_LEAVES})
        elif isinstance(module, FloatQuantLinear):
            found.update({f"{name}.{leaf}": module for leaf in module.exact_dtype_leaves})
    return found


def _check_one(key: str, stored: StoredTensor, target: torch.Tensor, layer: PackedLinear | None) -> None:
    if stored.shape != tuple(target.shape):
        need = "the model's config needs"
        if layer is not None:
            s = layer.scheme
            kind = f"data_type={s.data_type}, " if isinstance(layer, FloatQuantLinear) else ""
            need = (
                f"config.json's scheme ({kind}bits={s.bits}, group_size={s.group_size}) "
                f"and the layer size ({layer.out_features}x{layer.in_features}) need"
            )
        raise CheckpointError(
            f"{key} has shape {stored.shape} in {stored.file}, but {need} {tuple(target.shape)}"
        )
    dtype_ok = (
        stored.dtype == target.dtype
        if layer is not None or not target.is_floating_point()
        else isinstance(stored.dtype, torch.dtype) and stored.dtype.is_floating_point
    )
    if not dtype_ok:
        kind = "a packed tensor" if layer is not None else "this tensor"
        raise CheckpointError(
            f"{key} in {stored.file} is {_name(stored.dtype)}, but {kind} needs {_name(target.dtype)}"
        )


def _unplaced(key: str, stored: StoredTensor, model: nn.Module) -> str:
    layer, _, leaf = key.rpartition(".")
    if leaf in PACKED_LEAVES or leaf in FLOAT_LEAVES:
        try:
            module = model.get_submodule(layer)
        except AttributeError:
            module = None
        if module is not None and not isinstance(module, QuantLinear | FloatQuantLinear):
            return (
                f"{key} in {stored.file} is a packed tensor, but config.json's quantization_config "
                f"leaves {layer} unquantized"
            )
    return f"{key} in {stored.file} has no place in the model {type(model).__name__}"


def _name(dtype: torch.dtype | str) -> str:
    return str(dtype).removeprefix("torch.")
