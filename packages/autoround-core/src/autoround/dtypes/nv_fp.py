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
``to_groups`` cuts it: zero padding does not change the maximum), unless the type is bound to a
shared max|W| (:meth:`NvFpDataType.sharing`, its ``shared_amax``): vLLM fuses q/k/v and gate/up
(MoE: w1/w3) into one layer with one global scale, so each member is quantized under the global
scale of the fused weight, ``448 * 6 / max`` of the members' max|W| (Intel's
``update_fused_layer_global_scales``, on by default: the smallest of their global scales, the
same value; the groups are found by :mod:`autoround.algorithms.fused_scales`). The bound type
uses it everywhere a global scale enters (plain RTN, SignRound's tuning step and final
quantize-dequantize, optimized RTN's final one), except in the searches of optimized RTN's
block factors, which, like Intel's, run under the weight's own global scale. Intel's optimized
RTN for NVFP4 (``opt_rtn_nv_fp4``, a per-block search of 0.5x-1.51x factors) is
:mod:`autoround.dtypes.nv_fp_search`.

SignRound tunes NVFP4 as Intel's wrapper does (:func:`nv_tuning_qdq`): the offset ``v`` added
before the E2M1 rounding, and the factor ``max_scale`` on each block maximum (Intel's
``scale_coeff``; ``min_scale`` is unused), kept in [0, 1], the global scale fixed at the
weight's (or the fused group's). Every rounding (block scale to E4M3, elements to E2M1) is
Intel's straight-through estimator, so ``max_scale`` gets its gradient through the block scale.
With ``enable_alg_ext`` a layer starts from the searched factor of each block
(:meth:`NvFpDataType.searched_scale`, Intel's SignRoundV2 ``init_scale``) and tunes a factor in
[0, 2] on it. Where a block scale underflows to 0 Intel's gradient is NaN (``1/0`` under a
``where``); here it is 0. :meth:`NvFpDataType.quantize` returns the E2M1 values, not bit
patterns (as ``mx_fp`` does); ``QParams.scale`` is each block's effective float32 scale ``1/o``,
``NvFpQParams.global_scale`` the global one (what the compressed-tensors writer stores as
``weight_global_scale``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from autoround.dtypes.base import QParams, RtnOnly
from autoround.dtypes.e4m3 import e4m3
from autoround.dtypes.float_fused import e2m1_values, nv_elements_qdq
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


def global_scale(weight: torch.Tensor, amax: torch.Tensor | None = None) -> torch.Tensor:
    """The tensor's float32 global scale ``448 * 6 / max|W|`` (0-dim; 0 for an all-zero one);
    ``amax`` (0-dim), when given, stands for max|W| (a fused group's, shared by its members)."""
    if amax is None:
        amax = weight.to(torch.float32).abs().max()
    return E4M3_MAX * E2M1_MAX * reciprocal(amax.to(device=weight.device, dtype=torch.float32))


def block_scales(amax: torch.Tensor, max_scale: torch.Tensor | float, gs: torch.Tensor) -> torch.Tensor:
    """E4M3 block scales (float32) of block maxima ``amax`` (groups, 1) float32 times
    ``max_scale`` (broadcast: a (1, k) row gives k candidates per block) under global scale
    ``gs``."""
    # 1/6 as a Python float, multiplied in float32, as Intel does.
    block = (gs * ((amax * max_scale) * (1.0 / E2M1_MAX))).clamp(-E4M3_MAX, E4M3_MAX)
    return e4m3(block).to(torch.float32)


def inverse_scale(block_scale: torch.Tensor, global_scale: torch.Tensor) -> torch.Tensor:
    """``o = 1 / (block_scale * (1/gs))``; its reciprocal is the block's effective scale."""
    return reciprocal(block_scale * reciprocal(global_scale))


def e2m1(x: torch.Tensor, through: Through = forward_only) -> torch.Tensor:
    """float32 values in [-6, 6] rounded to the E2M1 grid (Intel's ``cast_to_fp4``), each
    rounding combined by ``through`` as in :func:`e4m3`."""
    if through is forward_only:
        # The same floats in a third of the passes (float_fused.e2m1_values says why); beyond
        # +-6 both clamp to +-6 (Intel's twos branch rounds 7 to 8, then clamps).
        with torch.no_grad():  # rounding: its gradient is 0 anyway
            return e2m1_values(x)[0].clamp_(-E2M1_MAX, E2M1_MAX)
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
    grouped: torch.Tensor,
    amax: torch.Tensor,
    v: torch.Tensor,
    max_coeff: torch.Tensor,
    tensor_amax: torch.Tensor | None = None,
) -> torch.Tensor:
    """NVFP4 quantize-dequantize for the tuning loop (``grouped``'s dtype): the values of
    :meth:`NvFpDataType.qdq` with straight-through gradients for ``v`` and ``max_coeff``.

    ``amax`` is each block's largest magnitude (groups, 1) float32 (the largest of them the
    tensor's, giving the global scale); ``max_coeff`` multiplies it (clipping factor, or the
    searched factor times the tuned one), (groups,) or (groups, 1). ``tensor_amax`` (0-dim, on
    ``grouped``'s device: this runs inside captured CUDA graphs) replaces the tensor's max|W| in
    the global scale (a fused group's).
    """
    inverse = _tuning_inverse(amax, max_coeff, tensor_amax)
    # The weight-sized part as one Function with its own backward (same values and gradients,
    # far fewer passes over the weight); the per-block scale stays with autograd.
    return nv_elements_qdq(grouped, v, inverse, reciprocal_ste(inverse))


def _tuning_inverse(
    amax: torch.Tensor, max_coeff: torch.Tensor, tensor_amax: torch.Tensor | None
) -> torch.Tensor:
    """Each block's ``o`` (groups, 1) of :func:`nv_tuning_qdq`, with straight-through gradients."""
    tensor = amax.max() if tensor_amax is None else tensor_amax.to(amax.device)
    gs = E4M3_MAX * E2M1_MAX * reciprocal(tensor)
    block_max = amax * max_coeff.reshape(-1, 1).to(amax.device)
    block = e4m3((gs * (block_max * (1.0 / E2M1_MAX))).clamp(-E4M3_MAX, E4M3_MAX), straight_through)
    return reciprocal_ste(block * reciprocal(gs))


def nv_tuning_qdq_reference(
    grouped: torch.Tensor,
    amax: torch.Tensor,
    v: torch.Tensor,
    max_coeff: torch.Tensor,
    tensor_amax: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`nv_tuning_qdq` through plain autograd over every operation: the formulation the
    fused step must match bit for bit (values and gradients; kept for the tests)."""
    inverse = _tuning_inverse(amax, max_coeff, tensor_amax)
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
    block factors (see the module docstring). ``shared_amax`` (0-dim float32, set by
    :meth:`sharing`) is the max|W| the global scale is taken from instead of the tensor's own."""

    name: str = "nv_fp"
    allowed_bits: tuple[int, ...] = (4,)
    shared_amax: torch.Tensor | None = field(default=None, compare=False, repr=False)

    def group_statistic(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """The largest max|W| of ``weights`` (0-dim float32): that of the weight they fuse into.
        Taken in each weight's dtype (exact: a maximum of magnitudes rounds nothing)."""
        device = weights[0].device
        amaxes = [w.detach().abs().amax().to(device=device, dtype=torch.float32) for w in weights]
        return torch.stack(amaxes).max()

    def sharing(self, statistic: torch.Tensor) -> NvFpDataType:
        """This type with the global scale taken from max|W| ``statistic`` (0-dim)."""
        return replace(self, shared_amax=statistic.detach().to(torch.float32).reshape(()))

    def own_scale(self) -> NvFpDataType:
        """This type without a shared max|W| (optimized RTN's searches run under the weight's
        own global scale, as Intel's do)."""
        return self if self.shared_amax is None else replace(self, shared_amax=None)

    @property
    def tunable(self) -> bool:
        """SignRound tunes the offsets and the factor on each block maximum."""
        return True

    def group_range(self, grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each block's symmetric range ``(-max|w|, max|w|)`` (groups, 1) float32."""
        amax = torch.abs(grouped).amax(dim=-1, keepdim=True).to(torch.float32)
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
        return nv_tuning_qdq(grouped, group_range[1], v, max_scale, self.shared_amax)

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
        qdq, qp = nv_opt_rtn(self, grouped, group_size, imatrix, search=self.own_scale())
        return qdq.to(out_dtype), qp

    @torch.no_grad()
    def searched_scale(
        self, grouped: torch.Tensor, bits: int, group_size: int, imatrix: torch.Tensor | None
    ) -> torch.Tensor:
        """SignRound's searched start: optimized RTN's factor of each block maximum (groups, 1)
        float32 (0.5 to 1.51; Intel's ``init_scale``), not the block scale itself; searched under
        the weight's own global scale (Intel's)."""
        return searched_factors(self.own_scale(), grouped, group_size, imatrix)

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
        coeff = factor.reshape(-1, 1) * base_scale
        return nv_tuning_qdq(grouped, amax, v, coeff, self.shared_amax)

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
        gs = self.global_scale_of(grouped)
        if isinstance(max_scale, torch.Tensor):
            max_scale = max_scale.reshape(-1, 1).to(grouped.device)
        amax = torch.abs(grouped).amax(dim=-1, keepdim=True).to(torch.float32)
        return self.qparams_of_blocks(block_scales(amax, max_scale, gs), gs)

    def global_scale_of(self, grouped: torch.Tensor) -> torch.Tensor:
        """The global scale this type quantizes ``grouped`` under (0-dim float32): the shared
        one where bound, else the tensor's own."""
        return global_scale(grouped, self.shared_amax)

    def block_scales_of(
        self, amax: torch.Tensor, max_scale: torch.Tensor | float, gs: torch.Tensor
    ) -> torch.Tensor:
        """:func:`block_scales` (the search's view of this type)."""
        return block_scales(amax, max_scale, gs)

    def qparams_of_blocks(self, block: torch.Tensor, gs: torch.Tensor) -> NvFpQParams:
        """The parameters of E4M3 block scales ``block`` (groups, 1) under global scale ``gs``."""
        scale = reciprocal(inverse_scale(block, gs))
        return NvFpQParams(scale, torch.zeros_like(scale), block, gs)

    def quantize(
        self, grouped: torch.Tensor, qp: QParams, bits: int, v: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        """E2M1 values (float32), after adding the offset ``v`` to the scaled weights."""
        if not isinstance(qp, NvFpQParams):
            raise TypeError("nv_fp quantizes with the NvFpQParams its qparams returns")
        with torch.no_grad():  # E2M1 values: rounded, without a gradient
            scaled = (grouped.to(torch.float32) * qp.inverse_scale).add_(v)
            return e2m1(scaled.clamp_(-E2M1_MAX, E2M1_MAX))

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
