"""Optimized RTN: round-to-nearest with a searched per-group scale (Intel's default for ``iters=0``).

For symmetric integer layers the scale of every group is searched over ~200 candidates around
the full-range scale, minimizing the squared error weighted by an importance matrix (mean
squared input activations from calibration data, :mod:`autoround.algorithms.imatrix`); see
:mod:`autoround.dtypes.int_search`. Asymmetric integer layers get plain RTN, as in Intel 0.16.1
without ``enable_neuqi`` (its optimized path has no asymmetric search).

Numerics follow Intel's: the search, the codes ``round(w / s)`` and ``s`` itself are computed in
``compute_dtype`` (Intel: the model dtype, bf16 with amp or float32 with ``amp=False``); the
checkpoint stores ``s`` as fp16. The weight written back is ``codes * fp16 scale`` (so the
in-memory model is exactly what the checkpoint dequantizes to; Intel keeps ``codes * s`` in
the model dtype in memory, a difference below fp16 rounding of the scale).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from autoround.dtypes import from_groups, to_groups
from autoround.dtypes.int import SCALE_DTYPE, SCALE_THRESHOLD
from autoround.dtypes.int_search import group_importance, opt_rtn_sym_codes
from autoround.layer_plan import LayerPlan
from autoround.modeling.blocks import linear_weight
from autoround.quantizer import LayerQuant, quantize_weight
from autoround.schemes import Scheme

logger = logging.getLogger(__name__)


def opt_rtn_weight(
    weight: torch.Tensor,
    scheme: Scheme,
    imatrix: torch.Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
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
    importance = None
    if imatrix is not None:
        importance = group_importance(imatrix.to(grouped.device), grouped, scheme.group_size, scheme.bits)
    codes, scale = opt_rtn_sym_codes(grouped, scheme.bits, importance, threshold=SCALE_THRESHOLD)
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
) -> dict[str, LayerQuant]:
    """Optimized-RTN every planned layer of ``model`` in place, one layer at a time.

    ``imatrix`` maps layer names to their importance (from
    :func:`autoround.algorithms.imatrix.collect_imatrix`, run before this on the unquantized
    model); layers without an entry are searched with uniform weights (Intel does this for layers
    outside the decoder blocks). ``compute_dtype`` None quantizes in each weight's dtype (Intel
    with amp on a bf16 model); ``torch.float32`` matches Intel's ``amp=False``.
    """
    layers = plan.quantized()
    imatrix = imatrix or {}
    results: dict[str, LayerQuant] = {}
    for name, scheme in tqdm(layers.items(), desc="opt-RTN", unit="layer", disable=not progress):
        weight = linear_weight(model.get_submodule(name))
        work = weight.to(device) if device is not None else weight
        imp = imatrix.get(name)
        qdq, quant = opt_rtn_weight(
            work, scheme, imp.to(work.device) if imp is not None else None, compute_dtype
        )
        weight.copy_(qdq.to(weight.device))
        results[name] = LayerQuant(quant.scheme, quant.scale.cpu(), quant.zero.cpu())
    logger.info(
        "optimized RTN quantized %d layers (%d with an imatrix)",
        len(results),
        sum(n in imatrix for n in results),
    )
    return results
