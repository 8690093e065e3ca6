"""The Python API: quantize a loaded model, save it, in the fewest calls.

``quantize`` plans every layer, runs the chosen algorithm (RTN, or SignRound when tuning
settings and calibration ids are given) and returns a :class:`QuantizedModel`; ``save`` writes
it in a format. :class:`autoround.autoround.AutoRound` wraps both with Intel auto-round's
argument names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoround import formats, layer_plan
from autoround.algorithms import quantize_rtn
from autoround.algorithms.imatrix import collect_imatrix
from autoround.algorithms.opt_rtn import OptRtnSettings, quantize_opt_rtn
from autoround.algorithms.signround import SignRoundSettings
from autoround.hardware import native_bf16
from autoround.layer_plan import LayerConfig
from autoround.modeling.moe import unfuse_experts
from autoround.quantized_model import QuantizedModel
from autoround.schemes import SchemeLike, parse_scheme
from autoround.tuning import preflight
from autoround.tuning.driver import BlockDone, BlockRestore, quantize_signround

logger = logging.getLogger(__name__)

#: What the checkpoint records for a round-to-nearest run (Intel writes the same).
RTN_SETTINGS = {"enable_quanted_input": False}
#: Intel's defaults: a checkpoint records a tuning setting only where it differs from these.
_DEFAULTS = {
    "batch_size": 8,
    "enable_minmax_tuning": True,
    "enable_quanted_input": True,
    "gradient_accumulate_steps": 1,
    "iters": 200,
    "nsamples": 128,
    "seqlen": 2048,
}


def checkpoint_settings(
    settings: SignRoundSettings, nsamples: int, seqlen: int, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """The tuning settings a checkpoint's config records (Intel's keys, defaults left out);
    ``amp`` says whether tuning on ``device`` ran under bf16 autocast."""
    values = {
        "amp": settings.autocast_dtype(device) is not None,
        "batch_size": settings.batch_size,
        "enable_minmax_tuning": settings.enable_minmax_tuning,
        "enable_quanted_input": settings.enable_quanted_input,
        "gradient_accumulate_steps": settings.gradient_accumulate_steps,
        "iters": settings.iters,
        "nsamples": nsamples,
        "seqlen": seqlen,
    }
    recorded: dict[str, Any] = {k: v for k, v in values.items() if _DEFAULTS.get(k, object()) != v}
    default_lr = 1.0 / settings.iters
    if settings.lr is not None and settings.lr != default_lr:
        recorded["lr"] = settings.lr
    if settings.minmax_lr is not None and settings.minmax_lr != (settings.lr or default_lr):
        recorded["minmax_lr"] = settings.minmax_lr
    return recorded


def quantize(
    model: nn.Module,
    scheme: SchemeLike | None = "W4A16",
    *,
    layer_config: LayerConfig | None = None,
    iters: int = 0,
    tuning: SignRoundSettings | None = None,
    opt_rtn: bool | OptRtnSettings = False,
    calibration: torch.Tensor | None = None,
    quant_lm_head: bool = False,
    block_names: list[str] | None = None,
    device: str | torch.device | None = None,
    tokenizer: Any | None = None,
    progress: bool = True,
    on_block_done: BlockDone | None = None,
    restore: BlockRestore | None = None,
    low_gpu_mem_usage: bool = False,
    **scheme_overrides: Any,
) -> QuantizedModel:
    """Quantize ``model`` in place and return it with its per-layer parameters.

    With ``iters=0`` and no ``tuning`` this is round-to-nearest, or optimized RTN with
    ``opt_rtn=True`` (a searched scale per group, weighted by an importance matrix from
    ``calibration``; symmetric integers below 8 bits only, as in Intel's; an
    :class:`~autoround.algorithms.opt_rtn.OptRtnSettings` chooses how). SignRound runs when ``tuning``
    is given (or ``iters > 0``, shorthand for ``SignRoundSettings(iters=iters)``) and needs
    ``calibration``: token ids of shape (nsamples, seqlen), e.g. from
    :func:`autoround.calibration.build_calibration_set`. ``low_gpu_mem_usage`` keeps SignRound's
    cached activations on the CPU. ``scheme_overrides`` (``bits=``,
    ``group_size=``, ``sym=``) apply on top of ``scheme``.
    """
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be an integer >= 0, got {iters!r}")
    if tuning is None and iters > 0:
        tuning = SignRoundSettings(iters=iters)
    resolved = parse_scheme(scheme, **scheme_overrides)
    unfused = unfuse_experts(model)
    if unfused:
        logger.info("split %d fused MoE expert modules into per-expert Linear layers", unfused)
    plan = layer_plan.resolve(model, resolved, layer_config, quant_lm_head, block_names)
    logger.info("layer plan: %s", layer_plan.describe(plan))
    preflight.require_quantized(plan)
    if tuning is None and opt_rtn:
        opt_settings = opt_rtn if isinstance(opt_rtn, OptRtnSettings) else OptRtnSettings()
        layers = _opt_rtn(model, plan, calibration, device, progress, opt_settings)
        amp = _imatrix_dtype(model, opt_settings) is not None
        return QuantizedModel(model, resolved, plan, layers, {"amp": amp, **RTN_SETTINGS}, tokenizer)
    if tuning is None:
        layers = quantize_rtn(model, plan, device=device, progress=progress)
        return QuantizedModel(model, resolved, plan, layers, dict(RTN_SETTINGS), tokenizer)
    if calibration is None or calibration.dim() != 2:
        raise ValueError(
            "SignRound needs calibration token ids of shape (nsamples, seqlen): pass calibration="
        )
    _check_outside_blocks(plan)
    layers, reports = quantize_signround(
        model, plan, calibration, tuning, device, progress, on_block_done, restore, low_gpu_mem_usage
    )
    tuning_device = torch.device(device or "cpu")
    settings = checkpoint_settings(tuning, calibration.shape[0], calibration.shape[1], tuning_device)
    qm = QuantizedModel(model, resolved, plan, layers, settings, tokenizer)
    qm.reports = reports
    return qm


def _opt_rtn(
    model: nn.Module,
    plan: layer_plan.LayerPlan,
    calibration: torch.Tensor | None,
    device: Any,
    progress: bool,
    settings: OptRtnSettings,
) -> dict[str, Any]:
    searched = [n for n, s in plan.quantized().items() if s.sym and s.data_type == "int" and s.bits < 8]
    imatrix = {}
    if searched:
        if calibration is None or calibration.dim() != 2:
            raise ValueError(
                "optimized RTN needs calibration token ids of shape (nsamples, seqlen): pass calibration="
            )
        in_blocks = [n for n in searched if any(n.startswith(b + ".") for b in plan.block_names)]
        # where the model lives: a CPU-resident model is not moved whole to the tuning device
        imatrix = collect_imatrix(
            model, in_blocks, calibration, progress=progress, autocast_dtype=_imatrix_dtype(model, settings)
        )
    return quantize_opt_rtn(
        model, plan, imatrix, compute_dtype=torch.float32, device=device, progress=progress, settings=settings
    )


def _imatrix_dtype(model: nn.Module, settings: OptRtnSettings) -> torch.dtype | None:
    """bf16 to autocast a float32 model's importance forward to, or None (the model's own dtype)."""
    param = next(model.parameters())
    choice = settings.imatrix_dtype
    if choice == "auto":
        choice = "bfloat16" if native_bf16(param.device) else "float32"
    return torch.bfloat16 if choice == "bfloat16" and param.dtype == torch.float32 else None


def _check_outside_blocks(plan: layer_plan.LayerPlan) -> None:
    outside = [n for n in plan.quantized() if not any(n.startswith(b + ".") for b in plan.block_names)]
    if outside:
        raise NotImplementedError(
            f"SignRound tunes layers inside the decoder blocks only; {outside} lie outside them "
            f"(quantizing lm_head with SignRound is not built yet: use iters=0 for it)"
        )


def save(
    qm: QuantizedModel, output_dir: str | Path, format: str = "auto_round", overwrite: bool = False
) -> Path:
    """Write ``qm`` to ``output_dir`` in ``format`` (atomically)."""
    return formats.save(qm, output_dir, format=format, overwrite=overwrite)
