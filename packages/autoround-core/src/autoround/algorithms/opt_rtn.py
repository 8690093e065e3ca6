"""Optimized RTN: round-to-nearest with a searched per-group scale (Intel's default for ``iters=0``).

For symmetric integer layers the scale of every group is searched over ~200 candidates around
the full-range scale, minimizing the squared error weighted by an importance matrix (mean
squared input activations from calibration data, :mod:`autoround.algorithms.imatrix`); see
:mod:`autoround.dtypes.int_search`. Asymmetric integer layers get plain RTN, as in Intel 0.16.1
without ``enable_neuqi`` (its optimized path has no asymmetric search).

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

from autoround.dtypes import from_groups, to_groups
from autoround.dtypes.int_formulas import SCALE_DTYPE, SCALE_THRESHOLD
from autoround.dtypes.int_refine import DEFAULT_REFINE_STEPS, refine_sym_scale
from autoround.dtypes.int_search import group_importance, opt_rtn_sym_codes
from autoround.layer_plan import LayerPlan
from autoround.modeling.blocks import linear_weight
from autoround.quantizer import LayerQuant, quantize_weight
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


def sym_codes(
    grouped: torch.Tensor,
    bits: int,
    group_size: int,
    imatrix: torch.Tensor | None,
    settings: OptRtnSettings = OptRtnSettings(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and scale (groups, 1) of symmetric integer groups: the search, then the refinement.

    ``grouped`` comes from :func:`autoround.dtypes.to_groups`; ``imatrix`` is the layer's
    per-input-channel importance or None. Search and codes are in ``grouped``'s dtype; refinement
    (float32) returns an fp16-exact scale.
    """
    importance = None
    if imatrix is not None:
        importance = group_importance(imatrix.to(grouped.device), grouped, group_size, bits)
    codes, scale = opt_rtn_sym_codes(
        grouped, bits, importance, threshold=SCALE_THRESHOLD, exact=settings.exact_search
    )
    if settings.refine_steps:
        codes, scale = refine_sym_scale(
            grouped.float(), codes.float(), scale.float(), bits, importance, settings.refine_steps
        )
    return codes, scale


def opt_rtn_weight(
    weight: torch.Tensor,
    scheme: Scheme,
    imatrix: torch.Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
    settings: OptRtnSettings = OptRtnSettings(),
) -> tuple[torch.Tensor, LayerQuant]:
    """Quantize-dequantize one (out, in) weight with the searched scale; result in ``weight``'s dtype.

    ``imatrix`` is the layer's per-input-channel importance (in,) or None (uniform weights).
    Asymmetric or non-integer schemes fall back to plain RTN (in ``compute_dtype``).
    """
    work = weight.to(compute_dtype) if compute_dtype is not None else weight
    if scheme.data_type != "int" or not scheme.sym:
        qdq, quant = quantize_weight(work, scheme)
        return qdq.to(weight.dtype), quant
    grouped, layout = to_groups(work, scheme.group_size)
    codes, scale = sym_codes(grouped, scheme.bits, scheme.group_size, imatrix, settings)
    scale16 = scale.to(SCALE_DTYPE)
    qdq = from_groups((codes * scale16).to(weight.dtype), layout)
    out_features = weight.shape[0]
    nmax = 2 ** (scheme.bits - 1)
    scale_rows = (
        scale16.reshape(out_features, -1)
        if scale16.numel() > 1
        else scale16.reshape(1, 1).expand(out_features, 1)
    )
    quant = LayerQuant(
        scheme,
        scale_rows.contiguous(),
        torch.full(scale_rows.shape, nmax, dtype=torch.int32, device=scale_rows.device),
    )
    return qdq, quant


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
    ``settings=OptRtnSettings.intel()``).
    """
    layers = plan.quantized()
    imatrix = imatrix or {}
    results: dict[str, LayerQuant] = {}
    for name, scheme in tqdm(layers.items(), desc="opt-RTN", unit="layer", disable=not progress):
        weight = linear_weight(model.get_submodule(name))
        work = weight.to(device) if device is not None else weight
        imp = imatrix.get(name)
        qdq, quant = opt_rtn_weight(
            work, scheme, imp.to(work.device) if imp is not None else None, compute_dtype, settings
        )
        weight.copy_(qdq.to(weight.device))
        results[name] = LayerQuant(quant.scheme, quant.scale.cpu(), quant.zero.cpu())
    logger.info(
        "optimized RTN quantized %d layers (%d with an imatrix)",
        len(results),
        sum(n in imatrix for n in results),
    )
    return results
