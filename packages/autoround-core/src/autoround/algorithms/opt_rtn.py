"""Optimized RTN: round-to-nearest with a searched per-group scale (Intel's default for ``iters=0``).

For layers whose data type searches scales (``DataType.searches_scale``: symmetric integers) the
scale of every group is searched over ~200 candidates around the full-range scale, minimizing
the squared error weighted by an importance matrix (mean squared input activations from
calibration data, :mod:`autoround.algorithms.imatrix`); see ``DataType.opt_rtn_qdq`` and
:mod:`autoround.dtypes.int_search`. Other layers (asymmetric integers) get plain RTN, as in Intel
0.16.1 without ``enable_neuqi`` (its optimized path has no asymmetric search).

autoround's default (:class:`OptRtnSettings`) then refines each group's scale by weighted least
squares for the codes it picked (:mod:`autoround.dtypes.int_refine`), which Intel does not: on
SmolLM2 W4A16 g128 (cpu-small) perplexity goes from 26.41 to 25.4. The search itself takes the
float32 ranking's pick and the importance comes from a bf16 forward where the hardware computes
bf16 natively; both are speed choices that moved perplexity by less than 0.03 there.
``OptRtnSettings.intel()`` is Intel's fp32 search (``amp=False``) bit for bit instead.

Numerics of the search follow Intel's: it, the codes ``round(w / s)`` and ``s`` itself are
computed in ``compute_dtype`` (Intel: the model dtype, bf16 with amp or float32 with
``amp=False``); the checkpoint stores ``s`` as fp16. The weight written back is
``codes * fp16 scale`` (so the in-memory model is exactly what the checkpoint dequantizes to;
Intel keeps ``codes * s`` in the model dtype in memory, a difference below fp16 rounding of the
scale).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn
from tqdm.auto import tqdm

from autoround.algorithms.base import AlgorithmJob, AlgorithmResult
from autoround.algorithms.fused_scales import fused_tensor_stats
from autoround.algorithms.imatrix import collect_imatrix
from autoround.algorithms.rtn import RTN_RECORDED
from autoround.dtypes import DTYPES, from_groups
from autoround.dtypes.base import with_shared_statistic
from autoround.dtypes.int_refine import DEFAULT_REFINE_STEPS
from autoround.hardware import autocast_dtype
from autoround.layer_plan import LayerPlan
from autoround.layer_quant import LayerQuant, quantize_weight, weight_groups
from autoround.modeling.blocks import linear_weight
from autoround.schemes import Scheme

logger = logging.getLogger(__name__)

ImatrixDtype = Literal["auto", "float32", "bfloat16"]


@dataclass(frozen=True)
class OptRtnSettings:
    """How optimized RTN picks each symmetric integer group's scale.

    Attributes:
        exact_search: re-score the search's best candidates with Intel's exact loss (its pick
            bit for bit) instead of taking the float32 ranking's pick (about 2x faster).
        refine_steps: rounds of least-squares scale refinement after the search (0: none, as
            Intel).
        imatrix_dtype: the dtype of the forward that collects the importance matrix; ``"auto"``
            is bf16 where the device computes bf16 natively (CUDA with bf16, CPUs with AVX512-BF16
            or AMX), else float32.
    """

    exact_search: bool = False
    refine_steps: int = DEFAULT_REFINE_STEPS
    imatrix_dtype: ImatrixDtype = "auto"

    def __post_init__(self) -> None:
        steps = self.refine_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"refine_steps must be an integer >= 0, got {self.refine_steps!r}")
        if self.imatrix_dtype not in get_args(ImatrixDtype):
            raise ValueError(
                f"imatrix_dtype must be one of {list(get_args(ImatrixDtype))}, got {self.imatrix_dtype!r}"
            )

    @classmethod
    def intel(cls) -> OptRtnSettings:
        """Intel auto-round 0.16.1's search with ``amp=False``, bit for bit."""
        return cls(exact_search=True, refine_steps=0, imatrix_dtype="float32")


def importance_layers(plan: LayerPlan) -> list[str]:
    """The planned layers optimized RTN collects an importance matrix for: those whose data type
    searches their scale, below 8 bits (Intel's rule: 8-bit layers are searched with uniform
    importance)."""
    return [
        name
        for name, scheme in plan.quantized().items()
        if DTYPES[scheme.data_type].searches_scale(scheme.bits, scheme.sym) and scheme.bits < 8
    ]


def opt_rtn_weight(
    weight: torch.Tensor,
    scheme: Scheme,
    imatrix: torch.Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
    settings: OptRtnSettings = OptRtnSettings(),
    tensor_stat: torch.Tensor | None = None,
) -> tuple[torch.Tensor, LayerQuant]:
    """Quantize-dequantize one (out, in) weight with the searched scale; result in ``weight``'s dtype.

    ``imatrix`` is the layer's per-input-channel importance (in,) or None (uniform weights).
    Layers whose data type does not search scales (asymmetric integers) fall back to plain RTN
    (in ``compute_dtype``). ``tensor_stat`` is the layer's fused group's per-tensor statistic
    (:func:`~autoround.algorithms.fused_scales.fused_tensor_stats`), or None.
    """
    work = weight.to(compute_dtype) if compute_dtype is not None else weight
    dtype = with_shared_statistic(DTYPES[scheme.data_type], tensor_stat)
    if not dtype.searches_scale(scheme.bits, scheme.sym):
        qdq, quant = quantize_weight(work, scheme, tensor_stat=tensor_stat)
        return qdq.to(weight.dtype), quant
    grouped, layout = weight_groups(work, scheme)
    qdq, qp = dtype.opt_rtn_qdq(
        grouped,
        scheme.bits,
        scheme.sym,
        scheme.group_size,
        imatrix,
        settings.exact_search,
        settings.refine_steps,
        weight.dtype,
    )
    return from_groups(qdq, layout), LayerQuant.from_grouped(scheme, qp, weight.shape[0])


@torch.no_grad()
def quantize_opt_rtn(
    model: nn.Module,
    plan: LayerPlan,
    imatrix: Mapping[str, torch.Tensor] | None = None,
    compute_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    settings: OptRtnSettings = OptRtnSettings(),
) -> dict[str, LayerQuant]:
    """Optimized-RTN every planned layer of ``model`` in place, one layer at a time.

    ``imatrix`` maps layer names to their importance (from
    :func:`autoround.algorithms.imatrix.collect_imatrix`, run before this on the unquantized
    model); layers without an entry are searched with uniform weights (Intel does this for layers
    outside the decoder blocks). ``compute_dtype`` None quantizes in each weight's dtype (Intel
    with amp on a bf16 model); ``torch.float32`` matches Intel's ``amp=False`` (with
    ``settings=OptRtnSettings.intel()``). Layers a runtime fuses share their data type's
    per-tensor statistic (NVFP4's global scale, :mod:`autoround.algorithms.fused_scales`).
    """
    layers = plan.quantized()
    imatrix = imatrix or {}
    stats = fused_tensor_stats(model, layers)  # before any weight is overwritten
    results: dict[str, LayerQuant] = {}
    for name, scheme in tqdm(layers.items(), desc="opt-RTN", unit="layer", disable=not progress):
        weight = linear_weight(model.get_submodule(name))
        work = weight.to(device) if device is not None else weight
        imp = imatrix.get(name)
        qdq, quant = opt_rtn_weight(
            work,
            scheme,
            imp.to(work.device) if imp is not None else None,
            compute_dtype,
            settings,
            stats.get(name),
        )
        weight.copy_(qdq.to(weight.device))
        results[name] = quant.cpu()
    logger.info(
        "optimized RTN quantized %d layers (%d with an imatrix)",
        len(results),
        sum(n in imatrix for n in results),
    )
    return results


def _imatrix_dtype(model: nn.Module, settings: OptRtnSettings) -> torch.dtype | None:
    """bf16 to autocast a float32 model's importance forward to, or None (the model's own dtype)."""
    param = next(model.parameters())
    if settings.imatrix_dtype == "auto":
        dtype = autocast_dtype(True, param.device)
    else:
        dtype = torch.bfloat16 if settings.imatrix_dtype == "bfloat16" else None
    return dtype if param.dtype == torch.float32 else None


@dataclass(frozen=True)
class OptRtn:
    """Optimized RTN as a registry entry: per layer, with :class:`OptRtnSettings`; calibration
    only for the layers whose data type searches its scale by importance."""

    name: str = "opt_rtn"
    title: str = "optimized RTN"
    granularity: Literal["layer", "block"] = "layer"
    settings_type: type | None = OptRtnSettings

    def needs_calibration(self, plan: LayerPlan) -> bool:
        return bool(importance_layers(plan))

    def quantize(self, model: nn.Module, plan: LayerPlan, job: AlgorithmJob) -> AlgorithmResult:
        settings: OptRtnSettings = job.settings
        autocast = _imatrix_dtype(model, settings)
        imatrix = {}
        searched = importance_layers(plan)
        if searched:
            assert job.calibration is not None  # the runner checked needs_calibration
            in_blocks = [n for n in searched if any(n.startswith(b + ".") for b in plan.block_names)]
            # where the model lives: a CPU-resident model is not moved whole to the tuning device
            imatrix = collect_imatrix(
                model, in_blocks, job.calibration, progress=job.progress, autocast_dtype=autocast
            )
        layers = quantize_opt_rtn(
            model,
            plan,
            imatrix,
            compute_dtype=torch.float32,
            device=job.device,
            progress=job.progress,
            settings=settings,
        )
        return AlgorithmResult(layers, {"amp": autocast is not None, **RTN_RECORDED})
