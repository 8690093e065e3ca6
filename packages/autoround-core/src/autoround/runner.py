"""The one driver: execute a :class:`~autoround.run.Run` on a model.

:func:`execute` plans the layers once (MoE experts unfused, every Linear given a scheme or a
reason to stay 16-bit), asks the algorithm what calibration it needs, runs it and returns a
:class:`~autoround.quantized_model.QuantizedModel`. :func:`quantize_and_save` adds what a
command-line run needs around that: the output location and the formats checked before any
work, the calibration set built, block-wise progress persisted (a killed run resumes), the
checkpoint written atomically and ``autoround_report.json`` beside it.
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

from autoround import auto_scheme, formats, layer_plan
from autoround.algorithms import ALGORITHMS, AlgorithmJob, BlockDone, BlockRestore
from autoround.algorithms.act_calibration import (
    calibrate_model,
    calibrated_layers,
    layer_ranges,
    require_ranges,
    with_input_absmax,
)
from autoround.calibration import DEFAULT_DATASET, build_calibration_set
from autoround.errors import UsageError
from autoround.formats.gguf import QUANT_METHOD as GGUF_METHOD
from autoround.formats.preflight import check_plan, require_quantized
from autoround.model_sources import load_model_and_tokenizer
from autoround.model_sources.blockwise import (
    TuningResidency,
    checkpoint_problem,
    load_blockwise_and_tokenizer,
    materialize,
    source_of,
)
from autoround.modeling import unfuse_experts
from autoround.nn.act_hooks import attach_act_quant
from autoround.output_guard import check_output_dir, run_inputs
from autoround.quantized_model import QuantizedModel
from autoround.resume import ResumeStore, fingerprint
from autoround.run import Run
from autoround.schemes import require_built

if TYPE_CHECKING:
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)
REPORT_FILE = "autoround_report.json"


def plan_layers(model: nn.Module, run: Run) -> layer_plan.LayerPlan:
    """Every Linear-like layer's scheme (or why it stays 16-bit), fused MoE experts unfused first."""
    unfused = unfuse_experts(model)
    if unfused:
        logger.info("split %d fused MoE expert modules into per-expert Linear layers", unfused)
    block_names = list(run.block_names) if run.block_names is not None else None
    plan = layer_plan.resolve(model, run.scheme, run.layer_config, run.quant_lm_head, block_names)
    plan = formats.adapt_plan(model, plan, run.formats)  # the formats' own choices (GGUF recipes)
    for name, scheme in plan.quantized().items():
        # before calibration or tuning: a scheme the layer quantizers do not build is never
        # silently quantized as its weight-only form
        require_built(scheme, f"layer {name}", run.algorithm)
    logger.info("layer plan: %s", layer_plan.describe(plan))
    return plan


def needs_calibration(run: Run, plan: layer_plan.LayerPlan) -> bool:
    """Whether ``run`` needs calibration ids for ``plan``: its algorithm does, or a layer's
    activations quantize with a range calibrated on them (static FP8, NVFP4's; Intel calibrates
    those with round-to-nearest too)."""
    return ALGORITHMS[run.algorithm].needs_calibration(plan) or bool(calibrated_layers(plan.quantized()))


def _require_calibration(run: Run, plan: layer_plan.LayerPlan, calibration: torch.Tensor | None) -> None:
    """Refuse, before any work, a run without the calibration ids it needs, naming why."""
    if not needs_calibration(run, plan) or (calibration is not None and calibration.dim() == 2):
        return
    static = calibrated_layers(plan.quantized())
    if static:
        scheme = plan.quantized()[static[0]]
        raise ValueError(
            f"layer {static[0]} (and {len(static) - 1} more): activations act_data_type="
            f"{scheme.act_data_type!r} with act_dynamic={scheme.act_dynamic} quantize with a range "
            f"calibrated on data (static activations), so quantizing needs calibration token ids "
            f"of shape (nsamples, seqlen): pass calibration="
        )
    raise ValueError(
        f"{ALGORITHMS[run.algorithm].title} needs calibration token ids of shape (nsamples, seqlen): "
        f"pass calibration="
    )


def execute(
    model: nn.Module,
    run: Run,
    *,
    plan: layer_plan.LayerPlan | None = None,
    calibration: torch.Tensor | None = None,
    tokenizer: Any | None = None,
    progress: bool = True,
    on_block_done: BlockDone | None = None,
    restore: BlockRestore | None = None,
) -> QuantizedModel:
    """Quantize ``model`` in place as ``run`` says; ``plan`` when already resolved for it."""
    plan = plan if plan is not None else plan_layers(model, run)
    require_quantized(plan)
    algorithm = ALGORITHMS[run.algorithm]
    _require_calibration(run, plan, calibration)
    source = source_of(model)
    residency = TuningResidency(source) if source is not None else None
    if source is not None and on_block_done is None:  # nowhere to keep tuned blocks
        materialize(model)
        residency = None
    job = AlgorithmJob(
        run.settings,
        calibration,
        run.device,
        progress,
        run.low_gpu_mem_usage,
        on_block_done,
        restore,
        residency,
    )
    static = calibrated_layers(plan.quantized())
    ranges = {}
    if static and algorithm.granularity == "layer":  # block-wise algorithms observe them per block
        assert calibration is not None  # _require_calibration checked
        ranges = calibrate_model(model, static, calibration, progress=progress)
    result = algorithm.quantize(model, plan, job)
    layers = with_input_absmax(result.layers, ranges)
    require_ranges(layers)
    # layers that quantize activations do so from now on, as the served checkpoint does
    attach_act_quant(model, plan.quantized(), layer_ranges(layers))
    return QuantizedModel(model, run.scheme, plan, layers, result.recorded, tokenizer, result.reports)


def calibration_ids(run: Run, tokenizer: Any) -> torch.Tensor:
    """The calibration token ids (nsamples, seqlen) ``run`` tunes on.

    Where the Hub is unreachable, ``AUTOROUND_DEFAULT_DATASET`` (a spec string, e.g.
    ``wikitext2:concat``) replaces Intel's default dataset, so unchanged scripts run offline.
    """
    spec = run.calibration
    dataset = spec.dataset
    replacement = os.environ.get("AUTOROUND_DEFAULT_DATASET")
    if isinstance(dataset, str) and dataset == DEFAULT_DATASET and replacement:
        logger.info("calibrating on %s (AUTOROUND_DEFAULT_DATASET) instead of %s", replacement, dataset)
        dataset = replacement
    calib = build_calibration_set(dataset, tokenizer, spec.nsamples, spec.seqlen, spec.seed)
    return calib.input_ids


def choose_schemes(model: nn.Module, tokenizer: Any, run: Run, progress: bool = True) -> Run:
    """An :class:`~autoround.auto_scheme.AutoScheme` run as the plain run its search chooses (the
    per-layer schemes in ``layer_config``, the most used one as ``scheme``); any other run as it
    is. A budget the options cannot meet on this model is refused before calibration is built."""
    auto = run.auto_scheme
    if auto is None:
        return run
    auto_scheme.check_options(auto, run.formats)
    unfuse_experts(model)
    space = auto_scheme.search_space(model, auto, run.layer_config, run.quant_lm_head, run.block_names)
    nsamples, seqlen = auto.calibration_shape(space.moe)
    dataset = auto.dataset or run.calibration.dataset
    spec = dataclasses.replace(run.calibration, dataset=dataset, nsamples=nsamples, seqlen=seqlen)
    ids = calibration_ids(dataclasses.replace(run, calibration=spec), tokenizer)
    chosen = auto_scheme.search(model, space, ids, run.device, progress)
    return dataclasses.replace(run, scheme=chosen.default, layer_config=chosen.layer_config, auto_scheme=None)


def preflight(model: nn.Module, run: Run) -> layer_plan.LayerPlan:
    """Plan the layers and check, before any work, that every format of ``run`` (and the runtimes
    serving it) can take the plan; returns the plan."""
    plan = plan_layers(model, run)
    check_plan(model, plan, run.formats, run.scheme)
    return plan


def quantize_and_save(
    model: nn.Module, tokenizer: Any, run: Run, output_dir: str | Path, overwrite: bool = False
) -> tuple[QuantizedModel, Path]:
    """Quantize ``model`` as ``run`` says and save it in each of ``run.formats`` (one tuning run;
    several formats each in a subdirectory of ``output_dir``: :func:`autoround.formats.checkpoint_dirs`).

    Refused before any work: an ``output_dir`` that is, contains or lies inside the model's
    directory, the dataset or the working directory, and a plan a format cannot store. Block-wise
    algorithms persist each finished block beside the output (a killed run started again with
    the same inputs resumes after the last finished block). A model loaded block by block
    (:func:`load_model`, ``low_cpu_mem_usage``) is tuned block by block and saved from those
    persisted blocks.
    """
    check_output_dir(output_dir, run_inputs(model, run.calibration.dataset))
    _check_blockwise(model, run)
    run = choose_schemes(model, tokenizer, run)
    plan = preflight(model, run)
    algorithm = ALGORITHMS[run.algorithm]
    calibration = calibration_ids(run, tokenizer) if needs_calibration(run, plan) else None
    resume = None
    if algorithm.granularity == "block" and calibration is not None:
        digest = fingerprint(calibration, model, tokenizer, **fingerprinted_arguments(model, run))
        resume = ResumeStore(output_dir, digest)  # locked until clear() or close()
    try:
        hooks = _resume_hooks(model, plan, resume) if resume is not None else {}
        result = execute(model, run, plan=plan, calibration=calibration, tokenizer=tokenizer, **hooks)
        if resume is not None:
            result.reports = resume.reports()
        source = source_of(model)
        if source is not None and resume is not None:  # the tuned blocks are read back from the store
            source.overlay = hooks["restore"]
        path = save(result, run, output_dir, overwrite)
        if resume is not None:
            resume.clear()
    finally:
        if resume is not None:  # a failed run keeps its progress but frees the folder
            resume.close()
    return result, path


def save(result: QuantizedModel, run: Run, output_dir: str | Path, overwrite: bool = False) -> Path:
    """Write ``result`` in each of ``run``'s formats, all at once (one atomic rename), with
    ``autoround_report.json`` (the algorithm's settings and per-block losses) in each checkpoint
    when the algorithm has settings."""
    report = json.dumps(_report(run, result), indent=2) + "\n" if run.settings is not None else None
    extra = {REPORT_FILE: report} if report is not None else None
    return formats.save(result, output_dir, format=run.formats, overwrite=overwrite, extra_files=extra)


def low_cpu_mem_problem(run: Run) -> str | None:
    """Why ``run`` cannot work on a model loaded block by block (None: it can)."""
    algorithm = ALGORITHMS[run.algorithm]
    if algorithm.granularity != "block":
        return (
            f"{algorithm.title} works on the whole model, not block by block (RTN of a checkpoint "
            f"runs model-free, shard by shard)"
        )
    if run.auto_scheme is not None:
        return "AutoScheme's search measures the whole model"
    whole = [
        name for name, entry in formats.entries(run.formats).items() if entry.quant_method == GGUF_METHOD
    ]
    if whole:
        return f"format {whole[0]} is exported from the whole model"
    return None


def use_low_cpu_mem(requested: bool | None, problem: str | None) -> bool:
    """The one decision on ``low_cpu_mem_usage``: on where nothing stands against it
    (``problem`` None) unless turned off; off otherwise, said in a log line, and refused when
    asked for explicitly."""
    if problem is None:
        if requested is not False:
            logger.info("low_cpu_mem_usage: the model is loaded, tuned and saved block by block")
        return requested is not False
    if requested:
        raise UsageError(
            f"low_cpu_mem_usage=True cannot apply: {problem}; leave it unset or pass "
            f"low_cpu_mem_usage=False (CLI: --disable_low_cpu_mem_usage)"
        )
    if requested is None:
        logger.info("low_cpu_mem_usage off: %s", problem)
    return False


def load_model(name_or_path: str, run: Run, dtype: torch.dtype | None) -> tuple[nn.Module, Any]:
    """The model and tokenizer ``name_or_path`` names, in ``dtype`` (None: the checkpoint's),
    loaded block by block where :func:`use_low_cpu_mem` decides so, whole otherwise."""
    requested = run.low_cpu_mem_usage
    problem = low_cpu_mem_problem(run) if requested is not False else None
    if requested is not False and problem is None:
        problem = checkpoint_problem(name_or_path)
    if use_low_cpu_mem(requested, problem):
        return load_blockwise_and_tokenizer(name_or_path, dtype)
    return load_model_and_tokenizer(name_or_path, dtype)


def _check_blockwise(model: nn.Module, run: Run) -> None:
    """A model loaded block by block for a run that cannot use it (its formats changed since):
    read whole, as :func:`use_low_cpu_mem` decides; a built model with low_cpu_mem_usage=True: refused."""
    if source_of(model) is None:
        if run.low_cpu_mem_usage:
            use_low_cpu_mem(True, "the model was passed in built: pass its checkpoint directory instead")
        return
    problem = low_cpu_mem_problem(run)
    if problem is not None and not use_low_cpu_mem(run.low_cpu_mem_usage, problem):
        materialize(model)


def _resume_hooks(model: nn.Module, plan: layer_plan.LayerPlan, resume: ResumeStore) -> dict[str, Any]:
    blocks = plan.block_names[0]

    def on_block_done(index: int, quants: dict[str, Any], report: Any) -> None:
        resume.save_block(index, model.get_submodule(report.name), report.name, quants, report)

    def restore(index: int, block: nn.Module) -> dict[str, Any] | None:
        return resume.restore(index, block, f"{blocks}.{index}")

    return {"on_block_done": on_block_done, "restore": restore}


def _report(run: Run, result: QuantizedModel) -> dict[str, Any]:
    """What ``autoround_report.json`` holds: the algorithm, its settings, per-block losses."""
    return {
        "algorithm": run.algorithm,
        "settings": dataclasses.asdict(run.settings),
        "blocks": [r.__dict__ for r in result.reports],
    }


def fingerprinted_arguments(model: nn.Module, run: Run) -> dict[str, Any]:
    """The arguments that change a block-wise run's result (the resume fingerprint's)."""
    return {
        "scheme": run.scheme.to_dict(),
        "layer_config": run.layer_config,
        "tuning": run.settings,
        "quant_lm_head": run.quant_lm_head,
        "model": type(model).__name__,
        "config": (cast("PretrainedConfig", model.config).to_dict() if hasattr(model, "config") else None),
    }
