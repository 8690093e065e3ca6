"""``AutoRound``: Intel auto-round's entry point, with its argument names and defaults, so its
examples run with only the import changed.

Unlike Intel's (opt-in ``AR_RESUME_DIR``), ``quantize_and_save`` is resumable by default: every
finished block is persisted beside the output directory, and a run killed at any point and
started again with the same arguments resumes after the last finished block.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoround import runner
from autoround.algorithms import OptRtnSettings
from autoround.auto_scheme import AutoScheme, check_options
from autoround.formats.preflight import check_schemes
from autoround.intel_defaults import INTEL, INTEL_ARG_NAMES, NO_EFFECT_ARGS, intel_args
from autoround.layer_plan import LayerConfig
from autoround.output_guard import check_output_dir, run_inputs
from autoround.quantized_model import QuantizedModel
from autoround.run import Run, for_formats, run_from_intel
from autoround.schemes import SchemeLike

logger = logging.getLogger(__name__)


class AutoRound:
    """Quantize a causal LM with SignRound (``iters > 0``) or optimized RTN (``iters=0``;
    plain round-to-nearest with ``disable_opt_rtn=True``).

    ``model`` is a loaded transformers model or a path / hub id / demo alias (``"smollm2"``).
    Argument names and defaults are Intel auto-round's (:data:`autoround.intel_defaults.INTEL`):
    ``scheme="W4A16"`` (here None, which is W4A16, or with a GGUF format alone that recipe's scheme:
    :mod:`autoround.formats.combine`), ``iters=200``, ``nsamples=128``, ``seqlen=2048``, ``batch_size=8``,
    ``lr=1/iters``, ``dataset="NeelNanda/pile-10k"`` (unreachable offline: pass a local
    .txt/.json/.jsonl path, a list of texts or token-id tensors).

    Two defaults differ from Intel's: ``enable_alg_ext=True`` (Intel: False), so symmetric integer
    layers are tuned from optimized RTN's searched scale, the factor on it learning at ``lr / 4``
    unless ``minmax_lr`` is given (:mod:`autoround.algorithms.scale_init` gives the numbers;
    ``enable_alg_ext=False`` is Intel's classic SignRound), and optimized RTN
    (``iters=0``) refines each searched scale by least squares (``opt_rtn_settings``, an
    :class:`~autoround.algorithms.opt_rtn.OptRtnSettings`; ``OptRtnSettings.intel()`` is Intel's
    search bit for bit).

    ``amp=True`` (Intel's default) runs SignRound's block forward and backward, and optimized
    RTN's importance forward, under bf16 autocast where the device multiplies bf16 natively (CUDA;
    CPUs with AVX512-BF16 or AMX); elsewhere, and with ``amp=False``, they run in float32. Unlike
    Intel's, the model, the cached activations, the targets and the tuned parameters stay float32.

    ``low_cpu_mem_usage`` (None: on where it changes nothing): a ``model`` given as a checkpoint
    directory is loaded block by block (meta device, then each block's weights when its turn
    comes) and :meth:`quantize_and_save` writes the same checkpoint from the tuned blocks it
    stored (docs/low_memory.md); :func:`autoround.runner.use_low_cpu_mem` decides.

    ``scheme=AutoScheme(avg_bits=3.0, options="W2A16G64,W4A16,W8A16")`` searches a per-layer plan
    under that bit budget first (docs/auto_scheme.md), then quantizes with it as ``layer_config``.

    Our extension: ``init_clipping="mse"`` starts each group's clipping factors at its
    weight-error-optimal value instead of 1.0 (``"minmax"``, Intel's start and the default); see
    :mod:`autoround.algorithms.clip_init`.
    """

    def __init__(
        self,
        model: nn.Module | str,
        tokenizer: Any | None = None,
        scheme: SchemeLike | AutoScheme | None = None,
        layer_config: LayerConfig | None = None,
        dataset: Any = INTEL.dataset,
        iters: int = INTEL.iters,
        seqlen: int = INTEL.seqlen,
        nsamples: int = INTEL.nsamples,
        batch_size: int = INTEL.batch_size,
        gradient_accumulate_steps: int = INTEL.gradient_accumulate_steps,
        low_gpu_mem_usage: bool = INTEL.low_gpu_mem_usage,
        device_map: str | int | dict[str, Any] | None = INTEL.device_map,
        enable_torch_compile: bool = False,
        seed: int = INTEL.seed,
        *,
        low_cpu_mem_usage: bool | None = None,
        opt_rtn_settings: OptRtnSettings | None = None,
        **kwargs: Any,
    ) -> None:
        _refuse_unknown("AutoRound", kwargs, NO_EFFECT_ARGS, accepted=INTEL_ARG_NAMES)
        args = intel_args(
            scheme=scheme,
            layer_config=layer_config,
            dataset=dataset,
            iters=iters,
            seqlen=seqlen,
            nsamples=nsamples,
            batch_size=batch_size,
            gradient_accumulate_steps=gradient_accumulate_steps,
            low_gpu_mem_usage=low_gpu_mem_usage,
            device_map=device_map,
            seed=seed,
            opt_rtn_settings=opt_rtn_settings,
            **{k: v for k, v in kwargs.items() if k not in NO_EFFECT_ARGS},
        )
        if enable_torch_compile:
            logger.warning("enable_torch_compile=True is not built yet and has no effect")
        self._args = args
        self.run: Run = dataclasses.replace(run_from_intel(args), low_cpu_mem_usage=low_cpu_mem_usage)
        if isinstance(model, str):
            model, loaded_tokenizer = runner.load_model(model, self.run, dtype=None)
            tokenizer = tokenizer or loaded_tokenizer
        elif low_cpu_mem_usage:
            runner.use_low_cpu_mem(True, "the model was passed in built: pass its checkpoint directory")
        self.model, self.tokenizer = model, tokenizer
        self.result: QuantizedModel | None = None

    @property
    def scheme(self) -> Any:
        """The run's default scheme."""
        return self.run.scheme

    @property
    def tuning(self) -> Any:
        """SignRound's settings, or None when this run does not tune."""
        return self.run.settings if self.run.algorithm == "signround" else None

    @property
    def opt_rtn(self) -> Any:
        """Optimized RTN's settings, or None when this run does not run it."""
        return self.run.settings if self.run.algorithm == "opt_rtn" else None

    def calibration(self) -> torch.Tensor:
        """The calibration token ids (nsamples, seqlen) this run tunes on (see
        :func:`autoround.runner.calibration_ids` for ``AUTOROUND_DEFAULT_DATASET``)."""
        return runner.calibration_ids(self.run, self.tokenizer)

    def quantize(self) -> QuantizedModel:
        """Quantize the model in place; returns the result (also kept on ``self.result``).

        A scheme no layer quantizer builds is refused before the calibration data is read
        (:func:`autoround.runner.plan_layers`)."""
        self.run = runner.choose_schemes(self.model, self.tokenizer, self.run)
        plan = runner.plan_layers(self.model, self.run)
        calibration = self.calibration() if runner.needs_calibration(self.run, plan) else None
        self.result = runner.execute(
            self.model, self.run, plan=plan, calibration=calibration, tokenizer=self.tokenizer
        )
        return self.result

    def quantize_and_save(
        self,
        output_dir: str | Path = "tmp_autoround",
        format: str = "auto_round",
        overwrite: bool = False,
        **kwargs: Any,
    ) -> Path:
        """Quantize (resumably, when tuning) and save; returns the checkpoint directory.

        ``format`` names one format or several (``"auto_round,auto_gptq"``: one tuning run, each
        format in its own subdirectory of ``output_dir``, named as Intel names them). A GGUF recipe
        alone quantizes with its own scheme when none was given; beside integer formats its file
        is written from their weights (:mod:`autoround.formats.combine` states the rule).

        Refused before any work: an unknown ``format`` or a scheme it cannot store (naming the
        formats that can), an ``output_dir`` that is, contains or lies inside the model's
        directory, the dataset or the working directory, and unknown keyword arguments (Intel's
        ``inplace`` is accepted with a warning: it has no effect).
        """
        _refuse_unknown("quantize_and_save", kwargs, frozenset({"inplace"}))
        self.run = for_formats(self.run, self._args, format)
        if self.run.auto_scheme is not None:
            check_options(self.run.auto_scheme, self.run.formats)
        check_schemes(self.run.scheme, self.run.layer_config, self.run.formats)
        if self.result is not None:
            check_output_dir(output_dir, run_inputs(self.model, self.run.calibration.dataset))
            return runner.save(self.result, self.run, output_dir, overwrite)
        self.result, path = runner.quantize_and_save(
            self.model, self.tokenizer, self.run, output_dir, overwrite
        )
        return path

    def preflight(self, format: str = "auto_round") -> None:
        """Check, before any work, that ``format`` (one or several, comma-separated) and the
        runtimes serving it can take the plan."""
        run = for_formats(self.run, self._args, format)
        check_schemes(run.scheme, run.layer_config, run.formats)
        runner.preflight(self.model, run)


def _refuse_unknown(
    where: str, kwargs: dict[str, Any], no_effect: frozenset[str], accepted: frozenset[str] = frozenset()
) -> None:
    """TypeError for keywords nobody reads; a warning naming the Intel ones that do nothing here."""
    unknown = sorted(set(kwargs) - no_effect - accepted)
    if unknown:
        raise TypeError(
            f"{where} got unexpected keyword argument(s) {unknown}; Intel's accepted without effect: "
            f"{sorted(no_effect)}"
        )
    ignored = sorted(set(kwargs) & no_effect)
    if ignored:
        logger.warning("%s: Intel argument(s) %s have no effect here and are ignored", where, ignored)
