"""The fast CPU backend: torch's packed int4 weight-only matmul, bf16 activations.

Choices, by measurement on torch 2.13 CPU (``bench/layers_cpu.py``):

* ``aten._weight_int4pack_mm_for_cpu`` reads 4-bit weights and is several times faster than a
  dense matmul at small M, but only with bf16 activations (~15x slower with fp32 ones). It
  takes a group size of 32, 64, 128 or 256, N a multiple of 16, and computes
  ``(q - 8) * scale + zero`` with the zero *in float*. Our ``scale * (q - zp)`` folds into that as
  ``zero = scale * (8 - zp)`` (negative fp16 scales included; scales and zeros held in bf16). A
  group size that is a multiple of 32 but larger than 256 (or one group per row) is served by
  repeating its scale over sub-groups; a partial last group pads K with zero codes and the
  activations with zeros.
* 2- and 3-bit codes fit in 4 bits, so the same op serves them (same speed as 4-bit), shifted by
  ``8 - 2**(bits-1)`` so that the folded zero is ``scale * (2**(bits-1) - zp)``: exactly 0 for
  symmetric schemes (an unshifted bf16 zero cost 2-bit layers ~2% error). 8-bit
  codes are split into two 4-bit planes, ``16 * hi + lo``, each one int4 call (``hi``: scale
  ``16 s``, zero ``s (128 - zp)``; ``lo``: scale ``s``, zero ``8 s``), any group size.
* Measured here (torch 2.13, 2 threads, 4096x4096 W4A16 g128; an AVX512 VM shared with other
  jobs): the int4 op took ~156-172 ms at M=512 against 272 ms for the dense fp32 matmul and
  ~530 ms for dequantize-per-call + fp32 matmul; on the AVX2 machine of ``environment.md`` it
  still beats fp32 at M=16 (10.0 vs 12.3 ms). So the int4 op serves every M by default. The
  per-call blockwise dequantize + fp32 matmul (exact, nothing cached, memory stays packed) is kept
  as an opt-in (``CpuBackend(dense_min_rows=...)``) for machines where measurement says
  otherwise; caching a dense fp32 copy was rejected: it is 8x the bf16 model's weight memory.

The int4 path computes in bf16, so with fp32 activations its error is bf16's (~3e-3
relative), not fp32's; ``CpuBackend(small_m_dtype=torch.float32)`` is exact and slow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from autoround.backends.base import int_scheme_reason
from autoround.kernels import reference
from autoround.packing import SUPPORTED_BITS, unpack_int32
from autoround.schemes import Scheme

if TYPE_CHECKING:
    from autoround.nn.quant_linear import QuantLinear

#: Group sizes the int4 op accepts, largest first.
INT4_GROUPS = (256, 128, 64, 32)
#: Output features must be a multiple of this for the int4 op's weight layout.
N_MULTIPLE = 16
#: Rows from which to dequantize + fp32 matmul instead of the int4 op: never, by default (above).
DEFAULT_DENSE_MIN_ROWS: int | None = None
#: Output columns dequantized at once on the many-rows path.
DENSE_BLOCK_COLUMNS = 1024


@dataclass(frozen=True)
class Int4Plane:
    """One int4 op operand: packed 4-bit codes and their folded (groups, N, 2) scale/zero."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor


@dataclass(frozen=True)
class CpuState:
    """A layer repacked for the int4 op: one plane (bits <= 4) or two (8-bit)."""

    planes: tuple[Int4Plane, ...]
    op_group: int
    padded_in: int


def _padded_width(width: int, in_features: int) -> int:
    """The group width the op sees: one group per row is padded to a multiple of 32."""
    return -(-in_features // 32) * 32 if width >= in_features else width


def _op_group(width: int) -> int | None:
    return next((g for g in INT4_GROUPS if width % g == 0), None)


def _plane(
    codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, repeat: int, dtype: torch.dtype
) -> Int4Plane:
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 2)
    folded = torch.stack([scale, zero], dim=-1).repeat_interleave(repeat, dim=0)
    return Int4Plane(packed, folded.to(dtype).contiguous())


def _planes(
    codes: torch.Tensor, scale: torch.Tensor, zeros: torch.Tensor, bits: int, repeat: int, dtype: torch.dtype
) -> tuple[Int4Plane, ...]:
    """Fold ``scale * (code - zp)`` into the op's ``(q - 8) * s + z``, per plane."""
    if bits <= 4:
        # Shift 2/3-bit codes to the middle of 0..15 so a symmetric zero folds to exactly 0:
        # a bf16 zero of ``scale * (8 - zp)`` would lose the weights' low bits to rounding.
        mid = 1 << (bits - 1)
        return (_plane(codes + (8 - mid), scale, scale * (mid - zeros), repeat, dtype),)
    high, low = codes >> 4, codes & 15
    return (
        _plane(high, 16 * scale, scale * (128 - zeros), repeat, dtype),
        _plane(low, scale, 8 * scale, repeat, dtype),
    )


class CpuBackend:
    """Packed int4 op with bf16 activations; optionally blockwise dequantize + fp32 matmul from some M."""

    name = "cpu"
    #: bf16 compute at few rows (see the module docstring); fp32 at many rows is exact.
    fp32_tolerance = 1e-2

    def __init__(
        self, small_m_dtype: torch.dtype = torch.bfloat16, dense_min_rows: int | None = DEFAULT_DENSE_MIN_ROWS
    ):
        self.small_m_dtype = small_m_dtype
        if small_m_dtype == torch.float32:
            self.fp32_tolerance = 1e-5
        self.dense_min_rows = dense_min_rows

    def supports(
        self,
        scheme: Scheme,
        in_features: int,
        out_features: int,
        device: torch.device,
        dtype: torch.dtype | None,
    ) -> str | None:
        if torch.device(device).type != "cpu":
            return f"device {torch.device(device).type!r} is not the CPU"
        reason = int_scheme_reason(scheme, SUPPORTED_BITS)
        if reason:
            return reason
        if out_features % N_MULTIPLE:
            return f"out_features={out_features} is not a multiple of {N_MULTIPLE} (int4 op layout)"
        width = _padded_width(scheme.group_size if scheme.group_size > 0 else in_features, in_features)
        if _op_group(width) is None:
            return (
                f"group size {scheme.group_size} is not a multiple of 32 (int4 op groups {list(INT4_GROUPS)})"
            )
        return None

    def prepare(self, layer: QuantLinear) -> CpuState:
        bits, k = layer.scheme.bits, layer.in_features
        width = _padded_width(layer.group_width, k)
        op_group = _op_group(width)
        assert op_group is not None, "supports() refuses such layers"
        groups = layer.scales.shape[0]
        padded_in = groups * width
        codes = unpack_int32(layer.qweight, bits, dim=0).t().to(torch.int32)
        codes = F.pad(codes, (0, padded_in - k))
        zeros = reference.unpack_zeros(layer.qzeros, bits, layer.out_features, layer.zero_offset)
        scale = layer.scales.float()
        planes = _planes(codes, scale, zeros.float(), bits, width // op_group, self.small_m_dtype)
        return CpuState(planes, op_group, padded_in)

    def forward(self, layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // max(x.shape[-1], 1)
        if self.dense_min_rows is not None and rows >= self.dense_min_rows:
            return _dense_forward(layer, x)
        return self._int4_forward(layer.backend_state, x)

    def _int4_forward(self, state: CpuState, x: torch.Tensor) -> torch.Tensor:
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k).to(self.small_m_dtype)
        if state.padded_in != k:
            x2 = F.pad(x2, (0, state.padded_in - k))
        x2 = x2.contiguous()
        mm = torch.ops.aten._weight_int4pack_mm_for_cpu
        out = mm(x2, state.planes[0].packed, state.op_group, state.planes[0].scales_zeros)
        for plane in state.planes[1:]:
            out = out + mm(x2, plane.packed, state.op_group, plane.scales_zeros)
        return out.to(x.dtype).reshape(*lead, out.shape[-1])


def _dense_forward(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    """fp32 ``x @ W`` with W dequantized a block of output columns at a time (nothing cached)."""
    n = layer.out_features
    lead, k = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, k).float()
    out = torch.empty(x2.shape[0], n, dtype=torch.float32)
    for start in range(0, n, DENSE_BLOCK_COLUMNS):
        stop = min(start + DENSE_BLOCK_COLUMNS, n)
        torch.matmul(x2, _dequantize_columns(layer, start, stop), out=out[:, start:stop])
    return out.to(x.dtype).reshape(*lead, n)


def _dequantize_columns(layer: QuantLinear, start: int, stop: int) -> torch.Tensor:
    """Dense fp32 (in, stop - start) weight of some output columns, straight from the checkpoint buffers."""
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
