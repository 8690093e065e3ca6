"""SignRound over a model: walk the decoder blocks, tune each one, feed its output to the next;
and SignRound's entry in :data:`autoround.algorithms.ALGORITHMS`.

Per block: the full-precision block's output on full-precision inputs is the target; the block
is tuned on the quantized predecessors' outputs (``enable_quanted_input``, Intel's default); its
layers' weights are then quantize-dequantized with the kept parameters and the quantized block's
outputs become the next block's inputs. A layer whose scheme quantizes activations (W8A8, MX)
has its input quantize-dequantized in the tuning forward and in the quantized block's forwards
(the losses reported, the next block's inputs), as Intel does; the targets come from the
unquantized block (:mod:`autoround.algorithms.act_tuning`). A layer whose activations quantize
with a calibrated range (static FP8, NVFP4's) has it observed first, as Intel's ``act_max``: the
unquantized block runs on what it receives (the quantized predecessors' outputs with
``enable_quanted_input``, else the full-precision inputs) with hooks on those layers
(:mod:`autoround.algorithms.act_calibration`); static FP8 then tunes a factor on it. The quantized
block's forwards (the losses reported, the next block's inputs) use the layers' final ranges, as
the saved checkpoint serves them (Intel's ``WrapperWALayer`` takes each input's own range there
instead: it passes the calibrated one under a keyword its functions ignore). Tuning works in
fp32 on a copy of the block, its matrix products under bf16 autocast where the device has native bf16
(``SignRoundSettings.amp``; dense bf16 matmul is ~9x slower on AVX2 CPUs, several times faster
with AMX); the model keeps its dtype.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from autoround.algorithms.act_calibration import (
    calibrated_layers,
    collect_input_absmax,
    layer_ranges,
    with_input_absmax,
)
from autoround.algorithms.act_tuning import quantized_inputs
from autoround.algorithms.base import (
    AlgorithmJob,
    AlgorithmResult,
    BlockDone,
    BlockResidency,
    BlockRestore,
)
from autoround.algorithms.block_activations import (
    WORK_DTYPE,
    BlockActivations,
    cache_dtype,
    reference_autocast,
)
from autoround.algorithms.block_placement import blocks_on_host
from autoround.algorithms.block_verdict import BlockJudge, set_weights
from autoround.algorithms.imatrix import collect_input_squares
from autoround.algorithms.signround import SignRoundSettings, tune_block
from autoround.algorithms.signround_loop import release_cuda_graphs
from autoround.algorithms.signround_settings import checkpoint_settings
from autoround.layer_plan import LayerPlan
from autoround.layer_quant import LayerQuant
from autoround.modeling.capture import capture_block_inputs, cast_kwargs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockReport:
    """What tuning one block achieved: RTN's and the tuned block's loss on the first batch of
    calibration samples (``batch_size`` of them), the best iteration, the time taken."""

    name: str
    layers: int
    rtn_loss: float
    tuned_loss: float
    best_iter: int
    seconds: float
    fell_back_to_rtn: bool = False


def quantize_signround(
    model: nn.Module,
    plan: LayerPlan,
    input_ids: torch.Tensor,
    settings: SignRoundSettings,
    device: torch.device | str | None = None,
    progress: bool = True,
    on_block_done: BlockDone | None = None,
    restore: BlockRestore | None = None,
    low_gpu_mem_usage: bool = False,
    residency: BlockResidency | None = None,
) -> tuple[dict[str, LayerQuant], list[BlockReport]]:
    """Tune every decoder block of ``model`` on ``input_ids`` (nsamples, seqlen), in place.

    ``restore`` (a resumed run) supplies blocks finished earlier: they are replayed to rebuild
    the next block's inputs, not tuned again. ``on_block_done`` is called after each tuned block.
    ``low_gpu_mem_usage`` keeps the cached block activations on the CPU, moving one batch at a
    time to ``device``. ``residency`` (``low_cpu_mem_usage``) loads each block's weights before
    its turn and releases them after it (after ``on_block_done``).
    """
    if len(plan.block_names) != 1:
        raise NotImplementedError(f"tuning several block lists is not built yet: {plan.block_names}")
    device = torch.device(device or "cpu")
    # The block list: a ModuleList (find_block_names) or the container a block_names entry names.
    blocks = cast(nn.ModuleList, model.get_submodule(plan.block_names[0]))
    walk = _BlockWalk(plan, settings, device, progress, on_block_done, restore, residency)
    with blocks_on_host(blocks, device):
        store = torch.device("cpu") if low_gpu_mem_usage else device
        dtype = cache_dtype(next(model.parameters()).dtype, device)
        model_device = next(model.parameters()).device
        captured = capture_block_inputs(model, blocks[0], input_ids, model_device, progress, dtype, store)
        kwargs = cast_kwargs(captured.kwargs, WORK_DTYPE, device)
        autocast = reference_autocast(settings.autocast_dtype(device), device)
        acts = BlockActivations.start(captured.hidden, settings.enable_quanted_input, dtype, store, autocast)
        del captured
        try:
            return walk.run(blocks, acts, kwargs)
        finally:
            release_cuda_graphs()


@dataclass(frozen=True)
class _BlockWalk:
    """The walk over the blocks of one run (see :func:`quantize_signround`)."""

    plan: LayerPlan
    settings: SignRoundSettings
    device: torch.device
    progress: bool
    on_block_done: BlockDone | None
    restore: BlockRestore | None
    residency: BlockResidency | None = None

    def run(
        self, blocks: nn.ModuleList, acts: BlockActivations, kwargs: dict[str, Any]
    ) -> tuple[dict[str, LayerQuant], list[BlockReport]]:
        results: dict[str, LayerQuant] = {}
        reports: list[BlockReport] = []
        bar = tqdm(range(len(blocks)), desc="SignRound", unit="block", disable=not self.progress)
        for index in bar:
            with self._resident(index):
                self._visit(index, blocks[index], acts, kwargs, results, reports, bar)
        return results, reports

    @contextlib.contextmanager
    def _resident(self, index: int) -> Iterator[None]:
        if self.residency is None:
            yield
            return
        self.residency.load(index)
        try:
            yield
        finally:
            self.residency.release(index)

    def _visit(
        self,
        index: int,
        model_block: nn.Module,
        acts: BlockActivations,
        kwargs: dict[str, Any],
        results: dict[str, LayerQuant],
        reports: list[BlockReport],
        bar: Any,
    ) -> None:
        name = f"{self.plan.block_names[0]}.{index}"
        layers = {k[len(name) + 1 :]: s for k, s in self.plan.in_block(name).items()}
        if self.restore is not None:
            original = copy.deepcopy(model_block).to(self.device, WORK_DTYPE)  # before restore() writes
            restored = self.restore(index, model_block)
            if restored is not None:  # the original weights are the fp reference
                results.update(restored)
                ranges = {k[len(name) + 1 :]: v for k, v in layer_ranges(restored).items()}
                _replay(original, model_block, layers, acts, kwargs, self.settings.batch_size, ranges)
                return
            del original
        step = quantize_block(model_block, name, layers, acts, kwargs, self.settings, index, self.device)
        reports.append(step.report)
        quants = {f"{name}.{k}": v for k, v in step.quants.items()}
        results.update(quants)
        bar.set_postfix(rtn=f"{step.report.rtn_loss:.2e}", tuned=f"{step.report.tuned_loss:.2e}")
        if self.on_block_done is not None:
            self.on_block_done(index, quants, step.report)


@dataclass(frozen=True)
class BlockStep:
    """One tuned block: its layers' parameters (names relative to the block) and its report."""

    quants: dict[str, LayerQuant]
    report: BlockReport


def quantize_block(
    model_block: nn.Module,
    name: str,
    layers: dict[str, Any],
    activations: BlockActivations,
    kwargs: dict[str, Any],
    settings: SignRoundSettings,
    index: int = 0,
    device: torch.device | str | None = None,
) -> BlockStep:
    """Tune one decoder block with SignRound, quantize-dequantize its layers in place, and
    advance ``activations`` past it (the next block's inputs and the full-precision path).

    This is one step of :func:`quantize_signround`, for hosts that walk the blocks themselves
    (llm-compressor's sequential pipeline). ``layers`` maps names relative to the block to their
    :class:`~autoround.schemes.Scheme`; ``activations`` starts from the first block's inputs
    (:meth:`BlockActivations.start`); ``kwargs`` are the block's other arguments (attention mask,
    rotary embeddings), shared by all samples. Tuning runs in fp32 (bf16 matrix products where
    ``settings.amp`` allows) on a copy of the block on ``device`` (default: the CPU); ``index``
    seeds the batch order as the block's position does in a full run. The model's block keeps
    its dtype.
    """
    device = torch.device(device or "cpu")
    kwargs = cast_kwargs(kwargs, WORK_DTYPE, device)
    work = copy.deepcopy(model_block).to(device, WORK_DTYPE)
    start = time.perf_counter()
    static = calibrated_layers(layers)
    # Intel's act_max: on the full-precision forward only when that is what the block receives
    on_fp = [] if activations.quanted_input else static
    with (
        collect_input_squares(work, layers if settings.enable_alg_ext else {}) as imatrix,
        collect_input_absmax(work, on_fp) as ranges,
    ):
        activations.advance_fp(work, kwargs, settings.batch_size)
    if static and activations.quanted_input:
        with collect_input_absmax(work, static) as ranges:
            activations.observe_tuned(work, kwargs, settings.batch_size)
    quants, report = _tune_one(
        work, model_block, name, layers, activations, kwargs, settings, index, imatrix, ranges
    )
    report = BlockReport(**{**report.__dict__, "seconds": time.perf_counter() - start})
    return BlockStep(quants, report)


def _tune_one(
    work: nn.Module,
    model_block: nn.Module,
    name: str,
    layers: dict[str, Any],
    acts: BlockActivations,
    kwargs: dict[str, Any],
    settings: SignRoundSettings,
    index: int,
    imatrix: dict[str, torch.Tensor],
    ranges: dict[str, torch.Tensor],
) -> tuple[dict[str, LayerQuant], BlockReport]:
    if not layers:
        acts.advance_tuned(work, kwargs, settings.batch_size)
        return {}, BlockReport(name, 0, 0.0, 0.0, 0, 0.0)
    result = tune_block(
        work,
        acts.tuned,
        acts.fp,
        kwargs,
        layers,
        settings,
        seed_offset=index,
        imatrix=imatrix,
        input_absmax=ranges,
    )
    judge = BlockJudge(work, layers, ranges, acts, kwargs, settings.batch_size)
    verdict = judge.verdict(name, result.params, result.best_loss)
    # the quantized block's forwards quantize the layers' inputs, as tuning did (calibrated
    # ranges: as observed, times the tuned factor)
    final_ranges = {n: verdict.params[n].input_range(r) for n, r in ranges.items()}
    with quantized_inputs(work, layers, final_ranges):
        quants = with_input_absmax(set_weights(work, model_block, layers, verdict.params), final_ranges)
        acts.advance_tuned(work, kwargs, settings.batch_size)
    logger.info(
        "%s: %d layers, loss RTN %.3e -> tuned %.3e (best iter %d)",
        name,
        len(layers),
        verdict.rtn_loss,
        verdict.tuned_loss,
        result.best_iter,
    )
    report = BlockReport(
        name, len(layers), verdict.rtn_loss, verdict.tuned_loss, result.best_iter, 0.0, verdict.fell_back
    )
    return quants, report


def _replay(
    work: nn.Module,
    model_block: nn.Module,
    layers: dict[str, Any],
    acts: BlockActivations,
    kwargs: dict[str, Any],
    batch_size: int,
    ranges: dict[str, torch.Tensor] | None = None,
) -> None:
    """Advance past a finished block: ``work`` holds its original weights, ``model_block`` the
    quantized ones (``layers``: their schemes; ``ranges``: the calibrated activation ranges of
    those that have one), exactly as an uninterrupted run would have left them."""
    acts.advance_fp(work, kwargs, batch_size)
    quantized = copy.deepcopy(model_block).to(next(work.parameters()).device, WORK_DTYPE)
    with quantized_inputs(quantized, layers, ranges):
        acts.advance_tuned(quantized, kwargs, batch_size)


@dataclass(frozen=True)
class SignRound:
    """SignRound as a registry entry: block by block, on calibration ids, with
    :class:`SignRoundSettings`."""

    name: str = "signround"
    title: str = "SignRound"
    granularity: Literal["layer", "block"] = "block"
    settings_type: type | None = SignRoundSettings

    def needs_calibration(self, plan: LayerPlan) -> bool:
        return True

    def quantize(self, model: nn.Module, plan: LayerPlan, job: AlgorithmJob) -> AlgorithmResult:
        outside = [n for n in plan.quantized() if not any(n.startswith(b + ".") for b in plan.block_names)]
        if outside:
            raise NotImplementedError(
                f"SignRound tunes layers inside the decoder blocks only; {outside} lie outside them "
                f"(quantizing lm_head with SignRound is not built yet: use iters=0 for it)"
            )
        assert job.calibration is not None  # the runner checked needs_calibration
        layers, reports = quantize_signround(
            model,
            plan,
            job.calibration,
            job.settings,
            job.device,
            job.progress,
            job.on_block_done,
            job.restore,
            job.low_gpu_mem_usage,
            job.residency,
        )
        nsamples, seqlen = job.calibration.shape
        recorded = checkpoint_settings(job.settings, nsamples, seqlen, torch.device(job.device or "cpu"))
        return AlgorithmResult(layers, recorded, list(reports))
