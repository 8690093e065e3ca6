"""The Python API: quantize a loaded model, save it, in the fewest calls.

``quantize`` turns its arguments into a :class:`~autoround.run.Run` and hands it to the one
driver (:func:`autoround.runner.execute`); ``save`` writes the result in a format.
:class:`autoround.AutoRound` offers the same with Intel auto-round's argument names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoround import auto_scheme, formats
from autoround.algorithms import BlockDone, BlockRestore, OptRtnSettings, SignRoundSettings
from autoround.auto_scheme import AutoScheme
from autoround.errors import SchemeError
from autoround.intel_defaults import check_iters
from autoround.layer_plan import LayerConfig
from autoround.modeling import unfuse_experts
from autoround.quantized_model import QuantizedModel
from autoround.run import Run
from autoround.runner import execute
from autoround.schemes import Scheme, SchemeLike, parse_scheme


def quantize(
    model: nn.Module,
    scheme: SchemeLike | AutoScheme | None = "W4A16",
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
    ``group_size=``, ``sym=``) apply on top of ``scheme``. An
    :class:`~autoround.auto_scheme.AutoScheme` searches the per-layer schemes first, on the
    first rows and tokens of ``calibration`` (docs/auto_scheme.md).
    """
    if isinstance(scheme, AutoScheme):
        if any(value is not None for value in scheme_overrides.values()):
            raise SchemeError(
                f"{sorted(scheme_overrides)} override one scheme; AutoScheme's options carry their own"
            )
        scheme, layer_config = _searched(
            model, scheme, layer_config, quant_lm_head, block_names, calibration, device, progress
        )
    algorithm, settings = _algorithm(iters, tuning, opt_rtn)
    run = Run(
        scheme=parse_scheme(scheme, **scheme_overrides),
        algorithm=algorithm,
        settings=settings,
        layer_config=layer_config,
        quant_lm_head=quant_lm_head,
        block_names=tuple(block_names) if block_names is not None else None,
        device=device,
        low_gpu_mem_usage=low_gpu_mem_usage,
    )
    return execute(
        model,
        run,
        calibration=calibration,
        tokenizer=tokenizer,
        progress=progress,
        on_block_done=on_block_done,
        restore=restore,
    )


def _searched(
    model: nn.Module,
    auto: AutoScheme,
    layer_config: LayerConfig | None,
    quant_lm_head: bool,
    block_names: list[str] | None,
    calibration: torch.Tensor | None,
    device: str | torch.device | None,
    progress: bool,
) -> tuple[Scheme, LayerConfig]:
    """The default scheme and layer_config an AutoScheme search chooses on ``calibration``."""
    if calibration is None or calibration.dim() != 2:
        raise ValueError(
            "AutoScheme searches on calibration token ids of shape (nsamples, seqlen): pass calibration="
        )
    unfuse_experts(model)
    space = auto_scheme.search_space(model, auto, layer_config, quant_lm_head, block_names)
    nsamples, seqlen = auto.calibration_shape(space.moe)
    plan = auto_scheme.search(model, space, calibration[:nsamples, :seqlen], device, progress)
    return plan.default, plan.layer_config


def _algorithm(
    iters: int, tuning: SignRoundSettings | None, opt_rtn: bool | OptRtnSettings
) -> tuple[str, Any]:
    """This function's own arguments: SignRound when tuning (or iters > 0), else RTN, optimized
    with ``opt_rtn``."""
    if check_iters(iters) > 0 or tuning is not None:
        return "signround", tuning if tuning is not None else SignRoundSettings(iters=iters)
    if opt_rtn:
        return "opt_rtn", opt_rtn if isinstance(opt_rtn, OptRtnSettings) else OptRtnSettings()
    return "rtn", None


def save(
    qm: QuantizedModel, output_dir: str | Path, format: str = "auto_round", overwrite: bool = False
) -> Path:
    """Write ``qm`` to ``output_dir`` in ``format`` (atomically)."""
    return formats.save(qm, output_dir, format=format, overwrite=overwrite)
