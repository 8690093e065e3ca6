"""One quantized layer's weight: :class:`LayerQuant` (per-row scale and zero of every group).

A quantized layer is kept as its quantize-dequantized weight (in the model's dtype, so the model
stays runnable for evaluation and for feeding the next block) plus a :class:`LayerQuant` holding
the scale and zero point of every group. Integer codes are recomputed from those when a format
packs the layer (``round(w / scale + zero)``, as Intel auto-round does), so no second copy of the
weights is held in memory.

Every algorithm cuts a layer's weight with :func:`weight_groups` (row groups, or the 2-D tiles of
a scheme's ``block_shape``: the one place that decides) and builds its :class:`LayerQuant` from a
data type's grouped :class:`~autoround.dtypes.base.QParams` through
:meth:`LayerQuant.from_grouped`. This module
holds a :class:`~autoround.schemes.Scheme`, so it sits above ``schemes`` in the import layers
(``docs/architecture.md``) while the rest of ``dtypes`` sits below; ``autoround.dtypes`` itself
does not import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoround.dtypes import DTYPES, from_groups
from autoround.dtypes.base import DataType, QParams, with_shared_statistic
from autoround.dtypes.grouping import GroupLayout, to_groups
from autoround.schemes import Scheme


def weight_groups(weight: torch.Tensor, scheme: Scheme) -> tuple[torch.Tensor, GroupLayout]:
    """A (out, in) weight cut as ``scheme`` quantizes it: (groups, width) row groups of its
    ``group_size``, or with a ``block_shape`` (tiles, rows * columns), one group per 2-D tile
    (:func:`~autoround.dtypes.grouping.to_groups`); :func:`~autoround.dtypes.from_groups` undoes it."""
    return to_groups(weight, scheme.block_shape if scheme.block_shape is not None else scheme.group_size)


def layer_dtype(scheme: Scheme, tensor_stat: torch.Tensor | None = None) -> DataType:
    """The data type that quantizes a layer of ``scheme`` (bound to its fused group's per-tensor
    statistic, if any); for 2-D tiles, the type's tile arithmetic (:meth:`DataType.for_tiles`;
    a :class:`~autoround.schemes.Scheme` takes a ``block_shape`` only for types that have one)."""
    dtype = DTYPES[scheme.data_type]
    tiled = dtype.for_tiles() if scheme.block_shape is not None else None
    return with_shared_statistic(dtype if tiled is None else tiled, tensor_stat)


def tile_grid(scheme: Scheme, shape: tuple[int, int]) -> tuple[int, int]:
    """(row tiles, column tiles) of a (out, in) weight cut in ``scheme.block_shape`` tiles."""
    if scheme.block_shape is None:
        raise ValueError(f"scheme {scheme} has no block_shape (2-D tiles)")
    (rows, cols), (tile_rows, tile_cols) = shape, scheme.block_shape
    return -(-rows // tile_rows), -(-cols // tile_cols)


def _per_row(tensor: torch.Tensor, out_features: int) -> torch.Tensor:
    """(groups_total, 1) -> (out, groups); a per-tensor value is broadcast to every row."""
    if tensor.numel() == 1:
        return tensor.reshape(1, 1).expand(out_features, 1).contiguous()
    return tensor.reshape(out_features, -1)


def _per_tile_row(tensor: torch.Tensor, scheme: Scheme, out_features: int) -> torch.Tensor:
    """(tiles, 1) -> (row tiles, column tiles): the tiles in :func:`weight_groups`' order."""
    if scheme.block_shape is None:
        return _per_row(tensor, out_features)
    return tensor.reshape(-(-out_features // scheme.block_shape[0]), -1)


@dataclass(frozen=True)
class LayerQuant:
    """Per-group parameters of one quantized layer.

    ``scale`` is (out, groups) in the data type's scale dtype; ``zero`` is (out, groups) int32
    with the true zero point (``2**(bits-1)`` everywhere for symmetric integers). A scheme with
    ``block_shape`` has one scale per 2-D tile instead: ``scale`` and ``zero`` are (row tiles,
    column tiles), ceil(out / rows) by ceil(in / columns) (:func:`tile_grid`).
    ``global_scale`` is the 0-dim float32 per-tensor scale of a type that has one (NVFP4's, which
    its block scales are relative to; ``scale`` holds the effective per-block scales), else None.
    ``input_absmax`` is, for a scheme whose activation scales are calibrated (static FP8, NVFP4's
    activation global scale), the largest ``|input|`` the layer saw on the calibration set
    (Intel's ``act_max``; times SignRound's tuned ``act_max_scale`` where that is tuned), 0-dim
    float32; None for dynamic activations and weight-only schemes.
    """

    scheme: Scheme
    scale: torch.Tensor
    zero: torch.Tensor
    global_scale: torch.Tensor | None = None
    input_absmax: torch.Tensor | None = None

    @classmethod
    def from_grouped(cls, scheme: Scheme, qparams: QParams, out_features: int) -> LayerQuant:
        """The layer's parameters from a data type's grouped ones (one row per group, as
        :func:`weight_groups` cuts an (out, in) weight), detached, on their device; a
        ``global_scale`` the qparams carry (NVFP4's) is kept."""
        global_scale = getattr(qparams, "global_scale", None)
        return cls(
            scheme,
            _per_tile_row(qparams.scale.detach(), scheme, out_features),
            _per_tile_row(qparams.zero.detach(), scheme, out_features).to(torch.int32),
            None if global_scale is None else global_scale.detach().reshape(()),
        )

    @property
    def groups(self) -> int:
        """Groups per output row (column tiles for a ``block_shape`` scheme)."""
        return self.scale.shape[1]

    def cpu(self) -> LayerQuant:
        """The same parameters on the CPU (where results are kept between layers)."""
        gs = None if self.global_scale is None else self.global_scale.cpu()
        absmax = None if self.input_absmax is None else self.input_absmax.cpu()
        return LayerQuant(self.scheme, self.scale.cpu(), self.zero.cpu(), gs, absmax)


def quantize_weight(
    weight: torch.Tensor,
    scheme: Scheme,
    v: torch.Tensor | float = 0.0,
    min_scale: torch.Tensor | float = 1.0,
    max_scale: torch.Tensor | float = 1.0,
    tensor_stat: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LayerQuant]:
    """Quantize-dequantize a (out, in) weight; returns the result in ``weight``'s dtype.

    ``v`` (same shape as the grouped weight or broadcastable) and the clipping factors
    ``min_scale`` / ``max_scale`` (one per group: per tile for a ``block_shape`` scheme) are
    SignRound's tunables; RTN leaves them at
    their neutral values. ``tensor_stat`` is the per-tensor statistic of the fused group the
    layer belongs to (NVFP4: its max|W|, so that the layer gets the group's global scale;
    :func:`autoround.algorithms.fused_scales.fused_tensor_stats`), or None (the weight's own).
    """
    dtype = layer_dtype(scheme, tensor_stat)
    grouped, layout = weight_groups(weight, scheme)
    qdq, qp = dtype.qdq(grouped, scheme.bits, scheme.sym, v, min_scale, max_scale)
    return from_groups(qdq, layout), LayerQuant.from_grouped(scheme, qp, weight.shape[0])


def group_width(scheme: Scheme, in_features: int) -> int:
    """Inputs per group: the group size, or the whole row for per-channel/per-tensor/narrow rows."""
    if 0 < scheme.group_size < in_features:
        return scheme.group_size
    return in_features


def _expand_to_columns(per_group: torch.Tensor, in_features: int, width: int) -> torch.Tensor:
    """(out, groups) -> (out, in), each group's value repeated over its ``width`` columns."""
    return per_group.repeat_interleave(width, dim=1)[:, :in_features]


def codes_of(weight: torch.Tensor, quant: LayerQuant) -> torch.Tensor:
    """Integer codes (uint8, (out, in)) of a quantize-dequantized weight.

    ``round(w / scale + zero)`` recovers the codes exactly: the weight's rounding error is far
    below half a quantization step for every supported bit width.
    """
    width = group_width(quant.scheme, weight.shape[1])
    scale = _expand_to_columns(quant.scale, weight.shape[1], width)
    zero = _expand_to_columns(quant.zero, weight.shape[1], width)
    codes = torch.round(weight / scale + zero).clamp_(0, 2**quant.scheme.bits - 1)
    return codes.to(torch.uint8)


def dequantize_codes(codes: torch.Tensor, quant: LayerQuant, dtype: torch.dtype) -> torch.Tensor:
    """Dense (out, in) weight from codes: ``scale * (codes - zero)``, computed in fp32."""
    width = group_width(quant.scheme, codes.shape[1])
    scale = _expand_to_columns(quant.scale, codes.shape[1], width).float()
    zero = _expand_to_columns(quant.zero, codes.shape[1], width).float()
    return (scale * (codes.float() - zero)).to(dtype)
