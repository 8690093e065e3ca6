"""The fast CPU backend: torch's packed int4 op for bf16/fp16 activations, exact fp32 otherwise.

The path is picked per call, by the activations' dtype (measured on torch 2.13 CPU, 2 threads;
``bench/layers_cpu.py``, figures in ``docs/benchmarks.md``):

* **bf16 / fp16 activations -> ``aten._weight_int4pack_mm_for_cpu`` in bf16.** It reads 4-bit
  weights and is several times faster than dense matmul at small M (4096x4096 M=1: ~0.2-0.4 ms
  against ~2.5 ms fp32); it serves 2/3/4/8 bits, sym and asym, and partial groups through the
  folding of :mod:`autoround.backends.cpu_layout`. It computes and rounds its output in bf16:
  ~2e-3 relative error against dequantize-then-matmul in fp32 (tolerance 1e-2).
* **fp32 activations -> fp32 matmul with the dequantized weight (exact, ~1e-6).** The int4 op
  cannot be exact in fp32 cheaply: its fp32 mode is 10-70x slower than a dense fp32 matmul, and
  in bf16 its output rounding alone costs ~2e-3. By default the dense fp32 weight is dequantized
  once, on the first fp32 forward, and cached with the layer: **an fp32 model on this backend
  holds the dense fp32 weights** (the dense fp32 model's memory, 8x the packed int4) and runs at
  dense fp32 speed. ``fp32_weight_cache=False`` keeps memory packed and dequantizes blocks of
  columns per call instead (slow at small M). ``fp32_activations="bf16"`` sends fp32 activations
  through the int4 op too (fast, bf16's ~2e-3 error, nothing dense cached).

* **bf16 / fp16 activations with many rows (M >= ``dense_min_rows``, default 256) -> dequantize
  blocks of columns per call, then a dense matmul** in bf16 where the CPU computes bf16 natively
  (avx512_bf16: 4096x4096 M=512 ~60 ms against ~97 ms for the int4 op) and in fp32 elsewhere
  (AVX2: bf16 matmul is ~3-9x slower than fp32 there, and the int4 op ~1.3x slower than fp32 at
  M=512). Nothing is cached: at M >= 256 the dequantization is a small part of the matmul.

For the speed, run the model in bf16. Settings are attributes of the registered instance, e.g.
``autoround.backends.BACKENDS["cpu"].fp32_weight_cache = False`` before the first forward.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from autoround.backends.base import PackedLayer, int_scheme_reason
from autoround.backends.cpu_layout import (
    INT4_GROUPS,
    N_MULTIPLE,
    CpuState,
    Int4Plane,
    dequantize_columns,
    op_geometry,
    repack_int4,
)
from autoround.hardware import native_bf16
from autoround.packing import SUPPORTED_BITS
from autoround.schemes import Scheme

#: Output columns dequantized at once on the uncached paths.
DENSE_BLOCK_COLUMNS = 1024
#: Rows from which bf16/fp16 calls dequantize blocks and matmul densely (measured crossover).
DEFAULT_DENSE_MIN_ROWS = 256


__all__ = ["INT4_GROUPS", "N_MULTIPLE", "CpuBackend", "CpuState", "Int4Plane"]


class CpuBackend:
    """int4 op for bf16/fp16 activations; exact fp32 matmul (cached dense weight) for fp32 ones.

    Args:
        fp32_activations: ``"exact"`` (default) or ``"bf16"`` (through the int4 op; ~2e-3 error).
        fp32_weight_cache: cache the dense fp32 weight on the first exact fp32 forward (default),
            or dequantize blocks of columns on every such call (no extra memory, slow).
        dense_min_rows: from this many rows, bf16/fp16 calls dequantize blocks and matmul densely
            (None: always the int4 op).
    """

    name = "cpu"
    #: Relative error bound against dequantize-then-matmul in fp32, fp32 activations (exact path).
    fp32_tolerance = 1e-3

    def __init__(
        self,
        fp32_activations: Literal["exact", "bf16"] = "exact",
        fp32_weight_cache: bool = True,
        dense_min_rows: int | None = DEFAULT_DENSE_MIN_ROWS,
    ) -> None:
        if fp32_activations not in ("exact", "bf16"):
            raise ValueError(f"fp32_activations must be 'exact' or 'bf16', not {fp32_activations!r}")
        self.fp32_activations = fp32_activations
        self.fp32_weight_cache = fp32_weight_cache
        self.dense_min_rows = dense_min_rows
        self.dense_dtype = torch.bfloat16 if native_bf16() else torch.float32
        if fp32_activations == "bf16":
            self.fp32_tolerance = 1e-2

    def supports(
        self,
        scheme: Scheme,
        in_features: int,
        out_features: int,
        device: torch.device,
        dtype: torch.dtype | None,
    ) -> str | None:
        """None for integer 2/3/4/8-bit CPU layers with N % 16 == 0 and a group size multiple of 32."""
        if torch.device(device).type != "cpu":
            return f"device {torch.device(device).type!r} is not the CPU"
        reason = int_scheme_reason(scheme, SUPPORTED_BITS)
        if reason:
            return reason
        if out_features % N_MULTIPLE:
            return f"out_features={out_features} is not a multiple of {N_MULTIPLE} (int4 op layout)"
        width = scheme.group_size if 0 < scheme.group_size < in_features else in_features
        if op_geometry(width, in_features) is None:
            groups = list(INT4_GROUPS)
            return f"group size {scheme.group_size} is not a multiple of 32 (int4 op groups {groups})"
        return None

    def prepare(self, layer: PackedLayer) -> CpuState:
        """Repack into int4 op planes (the dense fp32 weight comes later, only if fp32 calls come)."""
        return repack_int4(layer)

    def forward(self, layer: PackedLayer, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` in ``x``'s dtype, by the path the module docstring describes."""
        if x.dtype == torch.float32 and self.fp32_activations == "exact":
            return self._fp32_forward(layer, x)
        if self.dense_min_rows is not None and x.numel() >= self.dense_min_rows * x.shape[-1]:
            return dense_forward(layer, x, self.dense_dtype)
        return int4_forward(layer.backend_state, x)

    def _fp32_forward(self, layer: PackedLayer, x: torch.Tensor) -> torch.Tensor:
        state: CpuState = layer.backend_state
        if not self.fp32_weight_cache:
            return dense_forward(layer, x)
        if state.dense is None:
            with torch.no_grad():
                state.dense = dequantize_columns(layer, 0, layer.out_features).contiguous()
        return torch.matmul(x.float(), state.dense).to(x.dtype)


def int4_forward(state: CpuState, x: torch.Tensor) -> torch.Tensor:
    """``x @ W^T`` through the int4 op in bf16, returned in ``x``'s dtype."""
    k = x.shape[-1]
    x2 = x.reshape(-1, k)
    if x2.dtype != torch.bfloat16:
        x2 = x2.to(torch.bfloat16)
    if state.padded_in != k:
        x2 = F.pad(x2, (0, state.padded_in - k))
    x2 = x2.contiguous()
    mm = torch.ops.aten._weight_int4pack_mm_for_cpu
    out = mm(x2, state.planes[0].packed, state.op_group, state.planes[0].scales_zeros)
    for plane in state.planes[1:]:
        out = out + mm(x2, plane.packed, state.op_group, plane.scales_zeros)
    if out.dtype != x.dtype:
        out = out.to(x.dtype)
    return out.view(*x.shape[:-1], out.shape[-1])


def dense_forward(layer: PackedLayer, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x @ W`` computed in ``dtype``, W dequantized a block of output columns at a time (nothing cached)."""
    n = layer.out_features
    lead, k = x.shape[:-1], x.shape[-1]
    x2 = x.reshape(-1, k).to(dtype)
    out = torch.empty(x2.shape[0], n, dtype=dtype)
    for start in range(0, n, DENSE_BLOCK_COLUMNS):
        stop = min(start + DENSE_BLOCK_COLUMNS, n)
        torch.matmul(x2, dequantize_columns(layer, start, stop).to(dtype), out=out[:, start:stop])
    return out.to(x.dtype).reshape(*lead, n)
