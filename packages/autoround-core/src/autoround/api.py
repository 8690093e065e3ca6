"""The Python API: quantize a loaded model, save it, in the fewest calls.

``quantize`` plans every layer, runs the chosen algorithm and returns a :class:`QuantizedModel`;
``save`` writes it in a format. :class:`AutoRound` wraps both with Intel auto-round's argument
names so its examples run with only the import changed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoround import formats, layer_plan
from autoround.algorithms import quantize_rtn
from autoround.layer_plan import LayerConfig
from autoround.quantized_model import QuantizedModel
from autoround.schemes import SchemeLike, parse_scheme

logger = logging.getLogger(__name__)

#: What the checkpoint records for a round-to-nearest run (Intel writes the same).
RTN_SETTINGS = {"enable_quanted_input": False}


def _signround_missing(what: str) -> NotImplementedError:
    return NotImplementedError(
        f"{what} is not built yet: only round-to-nearest (iters=0 with disable_opt_rtn=True, "
        f"or the `autoround-rtn` recipe) works in this release. SignRound and optimized RTN "
        f"land with the SignRound tuner."
    )


def quantize(
    model: nn.Module,
    scheme: SchemeLike | None = "W4A16",
    *,
    layer_config: LayerConfig | None = None,
    iters: int = 0,
    quant_lm_head: bool = False,
    block_names: list[str] | None = None,
    device: str | torch.device | None = None,
    tokenizer: Any | None = None,
    progress: bool = True,
    **scheme_overrides: Any,
) -> QuantizedModel:
    """Quantize ``model`` in place and return it with its per-layer parameters.

    ``iters=0`` is round-to-nearest; SignRound (``iters > 0``) is not built yet.
    ``scheme_overrides`` (``bits=``, ``group_size=``, ``sym=``) apply on top of ``scheme``.
    """
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be an integer >= 0, got {iters!r}")
    if iters > 0:
        raise _signround_missing(f"SignRound tuning (iters={iters})")
    resolved = parse_scheme(scheme, **scheme_overrides)
    plan = layer_plan.resolve(model, resolved, layer_config, quant_lm_head, block_names)
    logger.info("layer plan: %s", layer_plan.describe(plan))
    layers = quantize_rtn(model, plan, device=device, progress=progress)
    return QuantizedModel(model, resolved, plan, layers, dict(RTN_SETTINGS), tokenizer)


def save(
    qm: QuantizedModel, output_dir: str | Path, format: str = "auto_round", overwrite: bool = False
) -> Path:
    """Write ``qm`` to ``output_dir`` in ``format`` (atomically)."""
    return formats.save(qm, output_dir, format=format, overwrite=overwrite)


class AutoRound:
    """Intel auto-round's entry point, with its argument names and defaults.

    Only what this release builds is accepted: ``iters=0`` with ``disable_opt_rtn=True``
    (round-to-nearest). Other settings raise NotImplementedError naming what is missing.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any | None = None,
        scheme: SchemeLike = "W4A16",
        bits: int | None = None,
        group_size: int | None = None,
        sym: bool | None = None,
        layer_config: LayerConfig | None = None,
        iters: int = 200,
        disable_opt_rtn: bool = False,
        quant_lm_head: bool = False,
        device_map: str | None = None,
        **kwargs: Any,
    ) -> None:
        if iters == 0 and not disable_opt_rtn:
            raise _signround_missing("optimized RTN (iters=0 without disable_opt_rtn=True)")
        if kwargs:
            logger.warning("AutoRound: ignoring settings not used by round-to-nearest: %s", sorted(kwargs))
        self.model = model
        self.tokenizer = tokenizer
        self.scheme = parse_scheme(scheme, bits=bits, group_size=group_size, sym=sym)
        self.layer_config = layer_config
        self.iters = iters
        self.quant_lm_head = quant_lm_head
        self.device = None if device_map in (None, "auto") else device_map
        self.result: QuantizedModel | None = None

    def quantize(self) -> QuantizedModel:
        """Quantize the model in place; returns the result (also kept on ``self.result``)."""
        self.result = quantize(
            self.model,
            self.scheme,
            layer_config=self.layer_config,
            iters=self.iters,
            quant_lm_head=self.quant_lm_head,
            device=self.device,
            tokenizer=self.tokenizer,
        )
        return self.result

    def quantize_and_save(self, output_dir: str | Path = "tmp_autoround", format: str = "auto_round") -> Path:
        """Quantize (if not done yet) and save to ``output_dir``; returns the directory."""
        result = self.result or self.quantize()
        return save(result, output_dir, format=format)
