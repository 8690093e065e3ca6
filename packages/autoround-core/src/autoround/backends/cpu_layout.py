"""The ``cpu`` backend's layouts: a layer repacked for torch's int4 op, and its dense fp32 weight.

``aten._weight_int4pack_mm_for_cpu(x, packed, op_group, scales_zeros)`` computes
``x @ ((q - 8) * s + z)`` per group of ``op_group`` (32, 64, 128 or 256) input rows, with K a
multiple of ``op_group`` and N of 16. What the op cannot take is folded in here, once:

* our ``scale * (code - zp)`` becomes ``s = scale``, ``z = scale * (8 - zp)`` (asym included);
* 2- and 3-bit codes are shifted to the middle of 0..15 (``+ 8 - 2**(bits-1)``), so that a
  symmetric zero folds to exactly 0 (a bf16 ``z`` would otherwise lose the weights' low bits);
* 8-bit codes are split into two 4-bit planes, ``16 * hi + lo``, one op call each;
* any group size that is a multiple of 32 maps onto the largest op group dividing both it and K,
  each op group taking its checkpoint group's scale: a partial last group (K=576, group 128 ->
  op group 64) needs no padding. Only a K that is not a multiple of 32 is padded with zero codes
  (and the activations with zeros per call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from autoround.backends.base import PackedLayer
from autoround.kernels import reference
from autoround.packing import unpack_int32

#: Group sizes the int4 op accepts, largest first.
INT4_GROUPS = (256, 128, 64, 32)
#: Output features must be a multiple of this for the int4 op's weight layout.
N_MULTIPLE = 16


@dataclass(frozen=True)
class Int4Plane:
    """One int4 op operand: packed 4-bit codes and their folded (op groups, N, 2) scale/zero."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor


@dataclass
class CpuState:
    """A layer repacked once for the ``cpu`` backend.

    ``planes``: one (bits <= 4) or two (8-bit) int4 operands in bf16; ``op_group``: the op's
    group size; ``padded_in``: K as the op sees it. ``dense``: the (in, out) fp32 weight, made on
    the first fp32 forward when the backend caches it (None until then).
    """

    planes: tuple[Int4Plane, ...]
    op_group: int
    padded_in: int
    dense: torch.Tensor | None = None


def op_geometry(width: int, in_features: int) -> tuple[int, int] | None:
    """(op group, padded K) for a checkpoint group ``width``, or None if no op group fits."""
    padded_in = -(-in_features // 32) * 32
    width = padded_in if width >= in_features else width
    common = math.gcd(width, padded_in)
    op_group = next((g for g in INT4_GROUPS if common % g == 0), None)
    return None if op_group is None else (op_group, padded_in)


def repack_int4(layer: PackedLayer, dtype: torch.dtype = torch.bfloat16) -> CpuState:
    """The layer's codes, scales and zeros as int4 op planes (scales/zeros in ``dtype``)."""
    bits, k = layer.scheme.bits, layer.in_features
    geometry = op_geometry(layer.group_width, k)
    assert geometry is not None, "CpuBackend.supports() refuses such layers"
    op_group, padded_in = geometry
    codes = unpack_int32(layer.qweight, bits, dim=0).t().to(torch.int32)  # (N, K)
    codes = F.pad(codes, (0, padded_in - k))
    zeros = reference.unpack_zeros(layer.qzeros, bits, layer.out_features, layer.zero_offset).float()
    scale = layer.scales.float()
    # The checkpoint group of every op group (a padded tail belongs to the last group).
    index = torch.arange(padded_in // op_group) * op_group // layer.group_width
    index = index.clamp(max=scale.shape[0] - 1)
    scale, zeros = scale[index], zeros[index]
    planes: tuple[Int4Plane, ...]
    if bits <= 4:
        mid = 1 << (bits - 1)
        planes = (_plane(codes + (8 - mid), scale, scale * (mid - zeros), dtype),)
    else:
        planes = (
            _plane(codes >> 4, 16 * scale, scale * (128 - zeros), dtype),
            _plane(codes & 15, scale, 8 * scale, dtype),
        )
    return CpuState(planes, op_group, padded_in)


def _plane(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, dtype: torch.dtype) -> Int4Plane:
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.contiguous(), 2)
    return Int4Plane(packed, torch.stack([scale, zero], dim=-1).to(dtype).contiguous())


def dequantize_columns(layer: PackedLayer, start: int, stop: int) -> torch.Tensor:
    """Dense fp32 (in, stop - start) weight of some output columns, from the checkpoint buffers."""
    bits, width = layer.scheme.bits, layer.group_width
    zword = slice(start * bits // 32, -(-stop * bits // 32))
    qweight, scales = layer.qweight[:, start:stop], layer.scales[:, start:stop].float()
    if bits == 3:  # codes straddle words: the reference unpacking
        return reference.dequantize(qweight, layer.qzeros[:, zword], scales, bits, width, layer.zero_offset)
    zeros = reference.unpack_zeros(layer.qzeros[:, zword], bits, stop - start, layer.zero_offset)
    per_word = 32 // bits
    shifts = (torch.arange(per_word, dtype=torch.int32) * bits).view(1, per_word, 1)
    codes = ((qweight.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(layer.in_features, -1).float()
    offset = -zeros.float() * scales
    if layer.in_features % width == 0:
        grouped = codes.view(-1, width, stop - start)
        return torch.addcmul(offset.unsqueeze(1), grouped, scales.unsqueeze(1)).view(layer.in_features, -1)
    g_idx = reference.group_index(layer.in_features, width)
    return torch.addcmul(offset[g_idx], codes, scales[g_idx])
