"""NVIDIA's NVFP4, registered as ``"nv_fp"`` (Intel auto-round's ``data_type`` name; 4 bits only).

Each weight is an E2M1 float (0, 0.5, 1, 1.5, 2, 3, 4, 6 and negatives); each block of 16
weights shares an FP8 E4M3 scale, and the whole tensor one FP32 global scale that stretches the
block scales over E4M3's range. Intel 0.16.1's plain round-to-nearest (``nv_fp4`` in
``auto_round/data_type/nvfp.py``), reproduced bit for bit
(``tests/fixtures/intel/fp_qdq.safetensors``), all in float32:

* global scale ``gs = 448 * 6 / max|W|`` over the whole tensor (``1 / 0`` taken as 0);
* block scale ``s = e4m3(clamp(gs * (max|w_block| * (1/6)), -448, 448))``, the E4M3 cast
  rounding to nearest even;
* ``o = 1 / (s * (1/gs))`` (again ``1 / 0 = 0``, so an all-zero block, or one whose scale
  underflows E4M3, comes out all zero);
* elements ``e2m1(clamp(w * o + v, -6, 6))``: below 2 rounded to halves, below 4 to integers,
  above to even integers, each with ``torch.round`` (half to even);
* result ``e2m1 * (1/o)``, in the input's dtype.

The global scale is that of the tensor given to :meth:`NvFpDataType.qdq` (the whole weight, as
``to_groups`` cuts it: zero padding does not change the maximum). Intel additionally gives q/k/v
and gate/up projections of one block their smallest global scale (``update_fused_layer_global_
scales``, on by default); that model-level step is not built. Intel's optimized RTN for NVFP4
(``opt_rtn_nv_fp4``, a per-block search of 0.5x-1.51x factors) is
:mod:`autoround.dtypes.nv_fp_search`.

SignRound tunes NVFP4 as Intel's wrapper does (:func:`nv_tuning_qdq`): the offset ``v`` added
before the E2M1 rounding, and the factor ``max_scale`` on each block maximum (Intel's
``scale_coeff``; ``min_scale`` is unused), kept in [0, 1], the global scale fixed at the
weight's. Every rounding (block scale to E4M3, elements to E2M1) is Intel's straight-through
estimator, so ``max_scale`` gets its gradient through the block scale. With ``enable_alg_ext``
a layer starts from the searched factor of each block (:meth:`NvFpDataType.searched_scale`,
Intel's SignRoundV2 ``init_scale``) and tunes a factor in [0, 2] on it. Where a block scale
underflows to 0 Intel's gradient is NaN (``1/0`` under a ``where``); here it is 0.
:meth:`NvFpDataType.quantize`
returns the E2M1 values, not bit patterns (as ``mx_fp`` does); ``QParams.scale`` is each block's
effective float32 scale ``1/o``. No format saves NVFP4 yet (formats' ``Capabilities``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoround.dtypes.base import QParams, RtnOnly
from autoround.dtypes.nv_fp_search import nv_opt_rtn, searched_factors
from autoround.dtypes.ste import Through, forward_only, reciprocal_ste, straight_through

#: Weights per E4M3 block scale (the only size Intel's NVFP4 accepts).
NV_BLOCK = 16
#: Largest E2M1 and E4M3 magnitudes.
E2M1_MAX = 6.0
E4M3_MAX = 448.0


def reciprocal(x: torch.Tensor) -> torch.Tensor:
    """``1 / x`` with ``1 / 0`` taken as 0 (Intel's ``get_reciprocal``)."""
    return torch.where(x == 0, torch.zeros_like(x), 1.0 / x)


def global_scale(weight: torch.Tensor) -> torch.Tensor:
    """The tensor's float32 global scale ``448 * 6 / max|W|`` (0-dim; 0 for an all-zero one)."""
    return E4M3_MAX * E2M1_MAX * reciprocal(weight.to(torch.float32).abs().max())


def inverse_scale(block_scale: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
    """``o = 1 / (block_scale * (1/gs))``; its reciprocal is the block's effective scale."""
    return reciprocal(block_scale * reciprocal(global_scale))


def e4m3(x: torch.Tensor, through: Through = forward_only) -> torch.Tensor:
    """float32 values rounded to FP8 E4M3 (nearest even), back in float32; ``through`` combines
    the rounded value with ``x`` (Intel's straight-through estimator, by default without the
    gradient: :mod:`autoround.dtypes.ste`)."""
    return through(x.to(torch.float8_e4m3fn).to(x.dtype), x)


def e2m1(x: torch.Tensor, through: Through = forward_only) -> torch.Tensor:
    """float32 values in [-6, 6] rounded to the E2M1 grid (Intel's ``cast_to_fp4``), each
    rounding combined by ``through`` as in :func:`e4m3`."""
    sign = torch.sign(x)
    x = torch.abs(x)
    halves = through((2.0 * x).round(), 2.0 * x) / 2.0
    ones = through(x.round(), x)
    twos = 2.0 * through((x / 2.0).round(), x / 2.0)
    below2 = x < 2.0
    below4 = x < 4.0
    x = halves * below2 + ones * (~below2) * below4 + twos * (~below2) * (~below4)
    return x.clamp(-E2M1_MAX, E2M1_MAX) * sign


def nv_tuning_qdq(
    grouped: torch.Tensor, amax: torch.Tensor, v: torch.Tensor, max_coeff: torch.Tensor
) -> torch.Tensor:
    """NVFP4 quantize-dequantize for the tuning loop (``grouped``'s dtype): the values of
    :meth:`NvFpDataType.qdq` with straight-through gradients for ``v`` and ``max_coeff``.

    ``amax`` is each block's largest magnitude (groups, 1) float32 (the largest of them the
    tensor's, giving the global scale); ``max_coeff`` multiplies it (clipping factor, or the
    searched factor times the tuned one), (groups,) or (groups, 1).
    """
    gs = E4M3_MAX * E2M1_MAX * reciprocal(amax.max())
    block_max = amax * max_coeff.reshape(-1, 1).to(amax.device)
    block = e4m3((gs * (block_max * (1.0 / E2M1_MAX))).clamp(-E4M3_MAX, E4M3_MAX), straight_through)
    inverse = reciprocal_ste(block * reciprocal(gs))
    scaled = (grouped.to(torch.float32) * inverse + v).clamp(-E2M1_MAX, E2M1_MAX)
    return (e2m1(scaled, straight_through) * reciprocal_ste(inverse)).to(grouped.dtype)


@dataclass(frozen=True)
class NvFpQParams(QParams):
    """:class:`QParams` (``scale`` = each block's effective scale ``1/o``, ``zero`` = 0) plus
    what NVFP4 stores: the E4M3 ``block_scale`` (float32, (groups, 1)) and the float32
    ``global_scale`` (0-dim)."""

    block_scale: torch.Tensor
    global_scale: torch.Tensor

    @property
    def inverse_scale(self) -> torch.Tensor:
        """``o``, what weights are multiplied by before rounding (see :func:`inverse_scale`)."""
        return inverse_scale(self.block_scale, self.global_scale)


@dataclass(frozen=True)
class NvFpDataType(RtnOnly):
    """NVFP4, registered as ``"nv_fp"``: round-to-nearest, SignRound tuning and the searched
    block factors (see the module docstring)."""

    name: str = "nv_fp"
    allowed_bits: tuple[int, ...] = (4,)

    @property
    def tunable(self) -> bool:
        """SignRound tunes the offsets and the factor on each block maximum."""
        return True

    def group_range(self, grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each block's symmetric range ``(-max|w|, max|w|)`` (groups, 1) float32."""
        amax = torch.max(torch.abs(grouped), dim=-1, keepdim=True)[0].to(torch.float32)
        return -amax, amax

    def tuning_qdq(
        self,
        grouped: torch.Tensor,
        group_range: tuple[torch.Tensor, torch.Tensor],
        bits: int,
        sym: bool,
        v: torch.Tensor,
        min_scale: torch.Tensor,
        max_scale: torch.Tensor,
    ) -> torch.Tensor:
        """:func:`nv_tuning_qdq` (``min_scale`` is unused: it gets no gradient)."""
        return nv_tuning_qdq(grouped, group_range[1], v, max_scale)

    def searches_scale(self, bits: int, sym: bool) -> bool:
        """Optimized RTN searches each block's scale factor (:mod:`~autoround.dtypes.nv_fp_search`)."""
        return True

    def opt_rtn_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        group_size: int,
        imatrix: torch.Tensor | None,
        exact: bool,
        refine_steps: int,
        out_dtype: torch.dtype,
    ) -> tuple[torch.Tensor, QParams]:
        """Intel's ``opt_rtn_fast_nvfp4`` (always its exact numerics; ``exact`` and
        ``refine_steps`` are unused)."""
        qdq, qp = nv_opt_rtn(self, grouped, group_size, imatrix)
        return qdq.to(out_dtype), qp

    @torch.no_grad()
    def searched_scale(
        self, grouped: torch.Tensor, bits: int, group_size: int, imatrix: torch.Tensor | None
    ) -> torch.Tensor:
        """SignRound's searched start: optimized RTN's factor of each block maximum (groups, 1)
        float32 (0.5 to 1.51; Intel's ``init_scale``), not the block scale itself."""
        return searched_factors(self, grouped, group_size, imatrix)

    def scaled_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor | float,
    ) -> tuple[torch.Tensor, QParams]:
        """Quantize-dequantize with each block maximum times ``factor * base_scale`` (the
        tuned factor and the searched one, Intel's ``max_scale * init_scale``)."""
        coeff = factor.reshape(-1, 1).to(base_scale.device) * base_scale
        return self.qdq(grouped, bits, True, v, max_scale=coeff)

    def scaled_tuning_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`scaled_qdq`'s values with straight-through gradients for ``v`` and ``factor``."""
        amax = self.group_range(grouped)[1]
        return nv_tuning_qdq(grouped, amax, v, factor.reshape(-1, 1) * base_scale)

    def scheme_problem(self, bits: int, group_size: int, sym: bool) -> str | None:
        """NVFP4 blocks are 16 weights and its elements carry their own sign (no zero point)."""
        if group_size != NV_BLOCK:
            return (
                f"group_size={group_size} is not allowed for data_type {self.name!r}: NVFP4 shares "
                f"one E4M3 scale per block of {NV_BLOCK} weights (allowed: {NV_BLOCK})"
            )
        if not sym:
            return (
                f"sym={sym} is not allowed for data_type {self.name!r}: E2M1 elements are "
                "sign-magnitude floats without a zero point (allowed: True)"
            )
        return None

    def qparams(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> NvFpQParams:
        """Global and block scales of the whole grouped tensor.

        ``max_scale`` shrinks each block maximum before its scale is taken (Intel's
        ``scale_coeff``); ``min_scale`` has no meaning for a symmetric range and is ignored.
        """
        gs = global_scale(grouped)
        if isinstance(max_scale, torch.Tensor):
            max_scale = max_scale.reshape(-1, 1).to(grouped.device)
        block_max = torch.max(torch.abs(grouped), dim=-1, keepdim=True)[0].to(torch.float32) * max_scale
        # 1/6 as a Python float, multiplied in float32, as Intel does.
        block = (gs * (block_max * (1.0 / E2M1_MAX))).clamp(-E4M3_MAX, E4M3_MAX)
        block = e4m3(block).to(torch.float32)
        scale = reciprocal(inverse_scale(block, gs))
        return NvFpQParams(scale, torch.zeros_like(scale), block, gs)

    def quantize(
        self, grouped: torch.Tensor, qp: QParams, bits: int, v: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        """E2M1 values (float32), after adding the offset ``v`` to the scaled weights."""
        if not isinstance(qp, NvFpQParams):
            raise TypeError("nv_fp quantizes with the NvFpQParams its qparams returns")
        scaled = grouped.to(torch.float32) * qp.inverse_scale + v
        return e2m1(scaled.clamp(-E2M1_MAX, E2M1_MAX))

    def dequantize(self, codes: torch.Tensor, qp: QParams) -> torch.Tensor:
        """``codes * (1/o)``, i.e. ``codes * scale`` (zero is 0)."""
        return codes * qp.scale

    def qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        v: torch.Tensor | float = 0.0,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> tuple[torch.Tensor, NvFpQParams]:
        """Quantize-dequantize in float32, returned in ``grouped``'s dtype (as Intel does)."""
        qp = self.qparams(grouped, bits, sym, min_scale, max_scale)
        return self.dequantize(self.quantize(grouped, qp, bits, v), qp).to(grouped.dtype), qp
