"""``AutoRound``: Intel auto-round's entry point, with its argument names and defaults, so its
examples run with only the import changed.

Unlike Intel's (opt-in ``AR_RESUME_DIR``), ``quantize_and_save`` is resumable by default: every
finished block is persisted beside the output directory, and a run killed at any point and
started again with the same arguments resumes after the last finished block.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from autoround.algorithms.opt_rtn import OptRtnSettings
from autoround.algorithms.signround import SignRoundSettings
from autoround.api import quantize, save
from autoround.calibration import DEFAULT_DATASET, build_calibration_set
from autoround.formats import check_format
from autoround.hardware import check_device
from autoround.layer_plan import LayerConfig, resolve
from autoround.modeling.blocks import find_block_names
from autoround.modeling.moe import unfuse_experts
from autoround.output_guard import check_output_dir, run_inputs
from autoround.quantized_model import QuantizedModel
from autoround.schemes import SchemeLike, parse_scheme
from autoround.tuning import preflight
from autoround.tuning.resume import ResumeStore, fingerprint

if TYPE_CHECKING:
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)
REPORT_FILE = "autoround_report.json"
# Intel arguments that only tune its own runtime; accepted, with no effect here.
_NO_EFFECT = {
    "platform",
    "nblocks",
    "enable_norm_bias_tuning",
    "momentum",
    "device",
    "to_quant_block_names",
}


class AutoRound:
    """Quantize a causal LM with SignRound (``iters > 0``) or round-to-nearest (``iters=0``).

    ``model`` is a loaded transformers model or a path / hub id / demo alias (``"smollm2"``).
    Argument names and defaults are Intel auto-round's: ``scheme="W4A16"``, ``iters=200``,
    ``nsamples=128``, ``seqlen=2048``, ``batch_size=8``, ``lr=1/iters``,
    ``dataset="NeelNanda/pile-10k"`` (unreachable offline: pass a local .txt/.json/.jsonl path,
    a list of texts or token-id tensors).

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

    Our extension: ``init_clipping="mse"`` starts each group's clipping factors at its
    weight-error-optimal value instead of 1.0 (``"minmax"``, Intel's start and the default); see
    :mod:`autoround.algorithms.clip_init`.
    """

    def __init__(
        self,
        model: nn.Module | str,
        tokenizer: Any | None = None,
        scheme: SchemeLike = "W4A16",
        layer_config: LayerConfig | None = None,
        dataset: Any = DEFAULT_DATASET,
        iters: int = 200,
        seqlen: int = 2048,
        nsamples: int = 128,
        batch_size: int = 8,
        gradient_accumulate_steps: int = 1,
        low_gpu_mem_usage: bool = False,
        device_map: str | int | None = None,
        enable_torch_compile: bool = False,
        seed: int = 42,
        *,
        bits: int | None = None,
        group_size: int | None = None,
        sym: bool | None = None,
        lr: float | None = None,
        minmax_lr: float | None = None,
        enable_minmax_tuning: bool = True,
        enable_quanted_input: bool = True,
        not_use_best_mse: bool = False,
        disable_opt_rtn: bool | None = None,
        quant_lm_head: bool = False,
        init_clipping: str = "minmax",
        enable_alg_ext: bool = True,
        opt_rtn_settings: OptRtnSettings | None = None,
        amp: bool = True,
        **kwargs: Any,
    ) -> None:
        _refuse_unknown("AutoRound", kwargs, _NO_EFFECT)
        if isinstance(model, str):
            from autoround.models.loading import load_model_and_tokenizer

            model, loaded_tokenizer = load_model_and_tokenizer(model, dtype=None)
            tokenizer = tokenizer or loaded_tokenizer
        default_opt_rtn = OptRtnSettings() if amp else OptRtnSettings(imatrix_dtype="float32")
        self.opt_rtn: OptRtnSettings | None = (
            (opt_rtn_settings or default_opt_rtn) if iters == 0 and not disable_opt_rtn else None
        )
        self.model, self.tokenizer = model, tokenizer
        self.scheme = parse_scheme(scheme, bits=bits, group_size=group_size, sym=sym)
        self.layer_config, self.dataset, self.quant_lm_head = layer_config, dataset, quant_lm_head
        self.nsamples, self.seqlen, self.seed = nsamples, seqlen, seed
        self.device = _device(device_map)
        self.low_gpu_mem_usage = low_gpu_mem_usage
        if enable_torch_compile:
            logger.warning("enable_torch_compile=True is not built yet and has no effect")
        self.tuning = (
            None
            if iters == 0
            else SignRoundSettings(
                iters=iters,
                lr=lr,
                minmax_lr=minmax_lr,
                batch_size=batch_size,
                gradient_accumulate_steps=gradient_accumulate_steps,
                enable_minmax_tuning=enable_minmax_tuning,
                not_use_best_mse=not_use_best_mse,
                init_clipping=init_clipping,
                enable_alg_ext=enable_alg_ext,
                enable_quanted_input=enable_quanted_input,
                seed=seed,
                amp=amp,
            )
        )
        self.result: QuantizedModel | None = None

    def calibration(self) -> torch.Tensor:
        """The calibration token ids (nsamples, seqlen) this run tunes on.

        Where the Hub is unreachable, ``AUTOROUND_DEFAULT_DATASET`` (a spec string, e.g.
        ``wikitext2:concat``) replaces the default dataset, so unchanged scripts run offline.
        """
        dataset = self.dataset
        if (
            isinstance(dataset, str)
            and dataset == DEFAULT_DATASET
            and os.environ.get("AUTOROUND_DEFAULT_DATASET")
        ):
            dataset = os.environ["AUTOROUND_DEFAULT_DATASET"]
            logger.info(
                "calibrating on %s (AUTOROUND_DEFAULT_DATASET) instead of %s", dataset, DEFAULT_DATASET
            )
        calib = build_calibration_set(dataset, self.tokenizer, self.nsamples, self.seqlen, self.seed)
        return calib.input_ids

    def quantize(
        self, resume: ResumeStore | None = None, calibration: torch.Tensor | None = None
    ) -> QuantizedModel:
        """Quantize the model in place; returns the result (also kept on ``self.result``)."""
        if (self.tuning is not None or self._needs_imatrix()) and calibration is None:
            calibration = self.calibration()
        hooks = self._resume_hooks(resume) if resume is not None else {}
        self.result = quantize(
            self.model,
            self.scheme,
            layer_config=self.layer_config,
            tuning=self.tuning,
            opt_rtn=self.opt_rtn or False,
            calibration=calibration,
            quant_lm_head=self.quant_lm_head,
            device=self.device,
            tokenizer=self.tokenizer,
            low_gpu_mem_usage=self.low_gpu_mem_usage,
            **hooks,
        )
        if resume is not None:
            self.result.reports = resume.reports()
        return self.result

    def _needs_imatrix(self) -> bool:
        """Optimized RTN calibrates only for symmetric integer layers below 8 bits (Intel's rule)."""
        if self.opt_rtn is None:
            return False
        unfuse_experts(self.model)
        plan = resolve(self.model, self.scheme, self.layer_config, self.quant_lm_head)
        return any(s.sym and s.data_type == "int" and s.bits < 8 for s in plan.quantized().values())

    def _resume_hooks(self, resume: ResumeStore) -> dict[str, Any]:
        blocks = find_block_names(self.model)[0]

        def on_block_done(index: int, quants: dict[str, Any], report: Any) -> None:
            resume.save_block(index, self.model.get_submodule(report.name), report.name, quants, report)

        def restore(index: int, block: nn.Module) -> dict[str, Any] | None:
            return resume.restore(index, block, f"{blocks}.{index}")

        return {"on_block_done": on_block_done, "restore": restore}

    def quantize_and_save(
        self,
        output_dir: str | Path = "tmp_autoround",
        format: str = "auto_round",
        overwrite: bool = False,
        **kwargs: Any,
    ) -> Path:
        """Quantize (resumably, when tuning) and save; returns the checkpoint directory.

        Refused before any work: an unknown ``format``, an ``output_dir`` that is, contains or
        lies inside the model's directory, the dataset or the working directory, and unknown
        keyword arguments (Intel's ``inplace`` is accepted with a warning: it has no effect).
        """
        _refuse_unknown("quantize_and_save", kwargs, {"inplace"})
        format = check_format(format)
        check_output_dir(output_dir, run_inputs(self.model, self.dataset))
        if self.result is None:
            self.preflight(format)
        resume = None
        result = self.result
        if result is None and self.tuning is not None:
            calibration = self.calibration()
            run = fingerprint(calibration, self.model, self.tokenizer, **self._arguments())
            resume = ResumeStore(output_dir, run)  # locked until clear() or close()
        try:
            if resume is not None:
                result = self.quantize(resume, calibration)
            elif result is None:
                result = self.quantize()
            path = save(result, output_dir, format=format, overwrite=overwrite)
            if result.reports or self.opt_rtn is not None:
                (path / REPORT_FILE).write_text(json.dumps(self._report(result), indent=2) + "\n")
            if resume is not None:
                resume.clear()
        finally:
            if resume is not None:  # a failed run keeps its progress but frees the folder
                resume.close()
        return path

    def _report(self, result: QuantizedModel) -> dict[str, Any]:
        """What ``autoround_report.json`` holds: the algorithm's settings and, when tuned, the
        per-block losses."""
        return {
            "tuning": dataclasses.asdict(self.tuning) if self.tuning is not None else None,
            "opt_rtn": dataclasses.asdict(self.opt_rtn) if self.opt_rtn is not None else None,
            "blocks": [r.__dict__ for r in result.reports],
        }

    def preflight(self, format: str = "auto_round") -> None:
        """Check, before any work, that ``format`` and the runtimes serving it can take the plan."""
        unfuse_experts(self.model)
        plan = resolve(self.model, self.scheme, self.layer_config, self.quant_lm_head)
        preflight.check(self.model, plan, format)

    def _arguments(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme.to_dict(),
            "layer_config": self.layer_config,
            "tuning": self.tuning,
            "quant_lm_head": self.quant_lm_head,
            "model": type(self.model).__name__,
            "config": (
                cast("PretrainedConfig", self.model.config).to_dict()
                if hasattr(self.model, "config")
                else None
            ),
        }


def _device(device_map: str | int | None) -> str | None:
    if device_map in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else None
    if isinstance(device_map, int):
        device_map = f"cuda:{device_map}"
    return str(check_device(device_map))


def _refuse_unknown(where: str, kwargs: dict[str, Any], no_effect: set[str]) -> None:
    """TypeError for keywords nobody reads; a warning naming the Intel ones that do nothing here."""
    unknown = sorted(set(kwargs) - no_effect)
    if unknown:
        raise TypeError(
            f"{where} got unexpected keyword argument(s) {unknown}; Intel's accepted without effect: "
            f"{sorted(no_effect)}"
        )
    if kwargs:
        logger.warning("%s: Intel argument(s) %s have no effect here and are ignored", where, sorted(kwargs))
