"""SignRound: tune per-weight rounding offsets and per-group clipping factors of one block.

For every quantized Linear of a block, ``v`` (one offset per weight, added before rounding) and
``min_scale`` / ``max_scale`` (one factor per group, shrinking the range the scale is computed
from) are trained by signed gradient descent to make the quantized block's output match the
full-precision block's output (MSE). Intel auto-round's defaults: ``v`` starts at 0, the factors
at 1 (``init_clipping="mse"`` starts them where the weight error is smallest instead, see
:mod:`autoround.algorithms.clip_init`) and are kept in [0, 1]; ``lr = 1 / iters``
(``2 / iters`` for <= 3 bits with >= 1000 iters), decaying linearly to 0; the parameters of
the iteration with the lowest loss are kept.

One default is not Intel's: ``enable_alg_ext=True`` (Intel: False) tunes symmetric integer,
``mx_fp`` and NVFP4 layers from optimized RTN's searched scale (as Intel's SignRoundV2 does),
with one factor on it kept in [0, 2] and learning at a quarter of the rounding lr (and, below 4
bits, a loss without the largest 0.1 % of errors); see :mod:`autoround.algorithms.scale_init`.

Layers a runtime fuses (q/k/v, gate/up) are tuned and quantized under their group's per-tensor
statistic, found per block before wrapping (NVFP4's shared global scale, Intel's
``update_block_global_scale_if_needed``; :mod:`autoround.algorithms.fused_scales`).

With ``amp`` (Intel's default) the block's forward and backward run under bf16 autocast, where
the device multiplies bf16 natively only; everything else stays float32.

The loop keeps everything on the device: the best loss and best parameters are tracked with
``torch.where``, so no iteration waits for the host.

A layer whose scheme quantizes activations (W8A8, FP8 per group, MX) has its input
quantize-dequantized in the tuning forward, straight through for the gradient, as Intel's
``WrapperLinear`` does (:mod:`autoround.algorithms.act_tuning`); a calibrated one (static FP8,
NVFP4's) with the layer's calibrated range, static FP8 tuning a factor on it (``act_max_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from autoround.algorithms import scale_init
from autoround.algorithms.act_tuning import input_quantizer
from autoround.algorithms.clip_init import initial_clipping
from autoround.algorithms.fused_scales import fused_tensor_stats
from autoround.algorithms.signround_loop import BlockLoop, loss_for
from autoround.algorithms.signround_settings import SignRoundSettings
from autoround.dtypes import DTYPES, from_groups
from autoround.dtypes.activations import calibrated_entry
from autoround.dtypes.base import with_shared_statistic
from autoround.layer_quant import LayerQuant, weight_groups
from autoround.modeling.blocks import linear_weight
from autoround.schemes import Scheme

#: Range the clipping factors are kept in (Intel's ``minmax_scale_bound``).
MINMAX_BOUNDS = (0.0, 1.0)
#: Range the factor on a calibrated activation range is kept in (Intel's ``_qdq_act`` clamp).
ACT_RANGE_BOUNDS = (0.0, 1.0)


class TunedLinear(nn.Module):
    """A Linear whose weight is quantize-dequantized from trainable ``v`` and clipping factors.

    With ``base_scale`` (groups, 1) the scale is ``base_scale * max_scale`` (the data type's
    ``scaled_tuning_qdq``, see :mod:`autoround.algorithms.scale_init`) instead of coming from the
    group's min/max; ``min_scale`` is then unused. ``tensor_stat`` (0-dim) is the per-tensor
    statistic of the layer's fused group (:mod:`autoround.algorithms.fused_scales`; NVFP4: the
    group's global scale is used in every step), else None. The data type must be ``tunable``.
    A scheme that quantizes activations has the layer's input quantize-dequantized before the
    product (:func:`~autoround.algorithms.act_tuning.input_quantizer`); ``input_absmax`` (0-dim)
    is a calibrated kind's range, and ``act_max_scale`` (shape (1,), kept in [0, 1]) the factor
    on it where the kind tunes one (trainable with the clipping factors), else None.
    """

    grouped: torch.Tensor  # a buffer, registered in __init__

    def __init__(
        self,
        linear: nn.Module,
        scheme: Scheme,
        tune_minmax: bool,
        init_clipping: str = "minmax",
        base_scale: torch.Tensor | None = None,
        tensor_stat: torch.Tensor | None = None,
        input_absmax: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.scheme = scheme
        self.linear = linear
        grouped, self.layout = weight_groups(linear_weight(linear).detach(), scheme)
        # on the weight's device: the tuning step may be replayed from a captured CUDA graph
        self.tensor_stat = None if tensor_stat is None else tensor_stat.to(grouped.device)
        self.dtype = with_shared_statistic(DTYPES[scheme.data_type], self.tensor_stat)
        if not self.dtype.tunable:
            raise ValueError(f"SignRound cannot tune data_type {scheme.data_type!r}")
        self.register_buffer("grouped", grouped, persistent=False)
        self.group_range = self.dtype.group_range(grouped)
        self.base_scale = base_scale
        self.v = nn.Parameter(torch.zeros_like(grouped, dtype=torch.float32))
        if base_scale is None:
            start = initial_clipping(self.dtype, grouped, scheme.bits, scheme.sym, init_clipping)
        else:
            start = torch.ones(grouped.shape[0], device=grouped.device)
        self.min_scale = nn.Parameter(start.clone(), requires_grad=tune_minmax and base_scale is None)
        self.max_scale = nn.Parameter(start, requires_grad=tune_minmax)
        self.bounds = MINMAX_BOUNDS if base_scale is None else scale_init.FACTOR_BOUNDS
        entry = calibrated_entry(scheme)
        self.act_max_scale: nn.Parameter | None = None
        if entry is not None and entry.tunes_range:
            ones = torch.ones(1, device=grouped.device)
            self.act_max_scale = nn.Parameter(ones, requires_grad=tune_minmax)
        absmax = None if input_absmax is None else input_absmax.to(grouped.device, torch.float32)
        self.quantize_input = input_quantizer(scheme, absmax, self.act_max_scale)

    def qdq_weight(self) -> torch.Tensor:
        """The (out, in) weight under the current parameters, in the working dtype."""
        if self.base_scale is not None:
            qdq = self.dtype.scaled_tuning_qdq(
                self.grouped, self.scheme.bits, self.base_scale, self.max_scale, self.v
            )
        else:
            qdq = self.dtype.tuning_qdq(
                self.grouped,
                self.group_range,
                self.scheme.bits,
                self.scheme.sym,
                self.v,
                self.min_scale,
                self.max_scale,
            )
        return from_groups(qdq, self.layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.linear takes the (out, in) weight whatever the wrapped layer's storage layout (Conv1D).
        bias = cast("torch.Tensor | None", self.linear.bias)  # nn.Linear's or Conv1D's
        if self.quantize_input is not None:
            x = self.quantize_input(x)
        return F.linear(x, self.qdq_weight(), bias)

    def clamp_(self) -> None:
        """Keep the clipping factors in their bounds (Intel clamps them before each use)."""
        self.min_scale.data.clamp_(*self.bounds)
        self.max_scale.data.clamp_(*self.bounds)
        if self.act_max_scale is not None:
            self.act_max_scale.data.clamp_(*ACT_RANGE_BOUNDS)

    def trainables(self) -> list[nn.Parameter]:
        """v, then the clipping factors and the activation range factor when they are tuned."""
        candidates = (self.v, self.min_scale, self.max_scale, self.act_max_scale)
        return [p for p in candidates if p is not None and p.requires_grad]


@dataclass(frozen=True)
class TunedParams:
    """The kept parameters of one layer (tuning state; :func:`qdq_with` makes its quantized
    weight): offsets (grouped shape) and clipping factors (groups,); ``base_scale`` (groups, 1)
    when the layer was tuned from a searched scale; ``tensor_stat`` (0-dim) the per-tensor
    statistic of its fused group, if any; ``act_max_scale`` (1,) the factor on its calibrated
    activation range, where tuned."""

    v: torch.Tensor
    min_scale: torch.Tensor
    max_scale: torch.Tensor
    base_scale: torch.Tensor | None = None
    tensor_stat: torch.Tensor | None = None
    act_max_scale: torch.Tensor | None = None

    def input_range(self, absmax: torch.Tensor) -> torch.Tensor:
        """The calibrated activation range ``absmax`` times the tuned factor (0-dim float32;
        Intel's ``act_max * act_max_scale``)."""
        absmax = absmax.to(torch.float32)
        if self.act_max_scale is None:
            return absmax.reshape(())
        return (absmax * self.act_max_scale.to(absmax.device)).reshape(())

    def rtn(self) -> TunedParams:
        """Plain round-to-nearest: no rounding offsets, the full min-max range, no searched scale
        (still under the fused group's statistic: the layers stay fusable)."""
        return TunedParams(
            torch.zeros_like(self.v),
            torch.ones_like(self.min_scale),
            torch.ones_like(self.max_scale),
            tensor_stat=self.tensor_stat,
            act_max_scale=None if self.act_max_scale is None else torch.ones_like(self.act_max_scale),
        )


@dataclass(frozen=True)
class BlockResult:
    """Tuned parameters per layer (names relative to the block) and the loss trajectory."""

    params: dict[str, TunedParams]
    initial_loss: float
    best_loss: float
    best_iter: int


def _wrap(
    block: nn.Module,
    layers: dict[str, Scheme],
    settings: SignRoundSettings,
    imatrix: dict[str, torch.Tensor] | None,
    input_absmax: dict[str, torch.Tensor] | None = None,
) -> dict[str, TunedLinear]:
    stats = fused_tensor_stats(block, layers)  # Intel: before the block's layers are wrapped
    wrapped = {}
    for name, scheme in layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = block.get_submodule(parent_name) if parent_name else block
        linear = getattr(parent, child)
        base_scale = None
        dtype = with_shared_statistic(DTYPES[scheme.data_type], stats.get(name))
        if settings.enable_alg_ext and dtype.searches_scale(scheme.bits, scheme.sym):
            grouped, _ = weight_groups(linear_weight(linear).detach(), scheme)
            imp = (imatrix or {}).get(name)
            base_scale = dtype.searched_scale(grouped, scheme.bits, scheme.group_size, imp)
        tuned = TunedLinear(
            linear,
            scheme,
            settings.enable_minmax_tuning,
            settings.init_clipping,
            base_scale,
            stats.get(name),
            (input_absmax or {}).get(name),
        )
        setattr(parent, child, tuned)
        wrapped[name] = tuned
    return wrapped


def _unwrap(block: nn.Module, wrapped: dict[str, TunedLinear]) -> None:
    for name, tuned in wrapped.items():
        parent_name, _, child = name.rpartition(".")
        parent = block.get_submodule(parent_name) if parent_name else block
        setattr(parent, child, tuned.linear)


def tune_block(
    block: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kwargs: dict[str, Any],
    layers: dict[str, Scheme],
    settings: SignRoundSettings,
    seed_offset: int = 0,
    imatrix: dict[str, torch.Tensor] | None = None,
    input_absmax: dict[str, torch.Tensor] | None = None,
) -> BlockResult:
    """Tune the quantized layers of ``block`` (names relative to it) and return their parameters.

    ``inputs`` (nsamples, seq, hidden) is what the block receives (quantized predecessors'
    outputs by default), ``targets`` the full-precision block's outputs on full-precision
    inputs. ``imatrix`` (layer name -> summed squared inputs per input channel) weights the scale
    search of ``enable_alg_ext``. ``input_absmax`` (layer name -> 0-dim) holds the calibrated
    input range of each layer whose activations take one. The block is left as it was; its
    layers' weights are not modified.
    """
    for param in block.parameters():
        param.requires_grad_(False)
    wrapped = _wrap(block, layers, settings, imatrix, input_absmax)
    try:
        return _optimize(block, wrapped, inputs, targets, kwargs, settings, seed_offset)
    finally:
        _unwrap(block, wrapped)


def _param_groups(
    wrapped: dict[str, TunedLinear], settings: SignRoundSettings
) -> list[tuple[nn.Parameter, float]]:
    groups = []
    for tuned in wrapped.values():
        bits = tuned.scheme.bits
        groups.append((tuned.v, settings.lr_for(bits)))
        if settings.enable_minmax_tuning:
            minmax_lr = settings.minmax_lr_for(bits, from_searched_scale=tuned.base_scale is not None)
            groups += [(tuned.min_scale, minmax_lr), (tuned.max_scale, minmax_lr)]
            if tuned.act_max_scale is not None:  # Intel: in the min-max group, at its layer rate
                groups.append((tuned.act_max_scale, settings.minmax_lr_for(bits)))
    return groups


def _optimize(
    block: nn.Module,
    wrapped: dict[str, TunedLinear],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    kwargs: dict[str, Any],
    settings: SignRoundSettings,
    seed_offset: int,
) -> BlockResult:
    groups = _param_groups(wrapped, settings)
    low_bit = any(t.scheme.bits < 4 for t in wrapped.values())
    # The block computes where its weights live; the cached activations may live elsewhere
    # (on the CPU with low_gpu_mem_usage), and only each batch is moved.
    loop = BlockLoop(
        block,
        groups,
        [t.clamp_ for t in wrapped.values()],
        inputs,
        targets,
        kwargs,
        settings,
        loss_for(low_bit, settings),
        groups[0][0].device,
    )
    loop.run(settings.seed + seed_offset)
    params = [p for p, _ in groups]
    best = loop.best if settings.keep_best else [p.detach().clone() for p in params]
    result = _collect(wrapped, dict(zip(map(id, params), best, strict=True)))
    final_iter = int(loop.best_iter) if settings.keep_best else settings.iters - 1
    final_loss = float(loop.best_loss) if settings.keep_best else float(loop.last_loss)
    return BlockResult(result, float(loop.first_loss), final_loss, final_iter)


def _collect(wrapped: dict[str, TunedLinear], best: dict[int, torch.Tensor]) -> dict[str, TunedParams]:
    def kept(param: nn.Parameter) -> torch.Tensor:
        return best.get(id(param), param.detach()).clone()

    return {
        name: TunedParams(
            kept(t.v),
            kept(t.min_scale).clamp_(*t.bounds),
            kept(t.max_scale).clamp_(*t.bounds),
            t.base_scale,
            t.tensor_stat,
            None if t.act_max_scale is None else kept(t.act_max_scale).clamp_(*ACT_RANGE_BOUNDS),
        )
        for name, t in wrapped.items()
    }


def qdq_with(weight: torch.Tensor, scheme: Scheme, params: TunedParams) -> tuple[torch.Tensor, LayerQuant]:
    """Final quantize-dequantize of a layer's weight (any dtype) with its tuned parameters, and
    the layer's :class:`LayerQuant` (on the weight's device)."""
    grouped, layout = weight_groups(weight, scheme)
    stat = None if params.tensor_stat is None else params.tensor_stat.to(grouped.device)
    dtype = with_shared_statistic(DTYPES[scheme.data_type], stat)
    v = params.v.to(grouped.device)
    if params.base_scale is not None:
        base, factor = params.base_scale.to(grouped.device), params.max_scale.to(grouped.device)
        qdq, qp = dtype.scaled_qdq(grouped, scheme.bits, base, factor, v)
    else:
        qdq, qp = dtype.qdq(grouped, scheme.bits, scheme.sym, v, params.min_scale, params.max_scale)
    return from_groups(qdq, layout), LayerQuant.from_grouped(scheme, qp, weight.shape[0])
