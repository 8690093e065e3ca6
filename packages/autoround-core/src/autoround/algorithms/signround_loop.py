"""SignRound's iterations over one block: forward, loss, backward, keep-best, sign step, clamp.

Everything an iteration needs from the host (which samples, the decayed step sizes, the
iteration number) is laid out beforehand as tensors, so an iteration is the same sequence of
device operations every time and never waits for the host. On CUDA that sequence can be
recorded once as a CUDA graph and replayed (:func:`use_cuda_graphs`): a small block's iteration
is otherwise bound by the host launching several hundred small kernels, not by the GPU. The graph
replays the very kernels the eager iteration launches, so results do not change (tested bit for
bit on an H100; ``AUTOROUND_CUDA_GRAPHS=0`` turns it off).
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoround.algorithms import scale_init
from autoround.algorithms.signround_settings import SignRoundSettings
from autoround.modeling.capture import block_output

logger = logging.getLogger(__name__)

#: Eager iterations before a CUDA graph is recorded: they warm up cuBLAS / autocast on a side
#: stream, as torch.cuda.graph requires, and are ordinary iterations of the run.
GRAPH_WARMUP = 3
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def use_cuda_graphs(device: torch.device, inputs: torch.Tensor, settings: SignRoundSettings) -> bool:
    """Whether the iterations are replayed from a CUDA graph: on CUDA, with the cached
    activations on the tuning device (not ``low_gpu_mem_usage``), more iterations than the
    warm-up, and ``AUTOROUND_CUDA_GRAPHS`` not ``0`` (an escape hatch)."""
    return (
        device.type == "cuda"
        and inputs.device == device
        and settings.iters > GRAPH_WARMUP
        and os.environ.get("AUTOROUND_CUDA_GRAPHS", "1") != "0"
    )


def sample_order(nsamples: int, size: int, iters: int, seed: int) -> list[list[int]]:
    """The sample indices of every iteration: shuffled, reshuffled when fewer than ``size``
    remain (Intel's sampler)."""
    rng = random.Random(seed)
    order: list[int] = []
    batches = []
    for _ in range(iters):
        if len(order) < size:
            order = list(range(nsamples))
            rng.shuffle(order)
        batch, order = order[:size], order[size:]
        batches.append(batch)
    return batches


def plain_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target.float())


def loss_for(low_bit: bool, settings: SignRoundSettings) -> LossFn:
    """MSE, or with ``enable_alg_ext`` below 4 bits, MSE without the largest errors (Intel's)."""
    return scale_init.outlier_suppressed_mse if settings.enable_alg_ext and low_bit else plain_mse


@dataclass
class BlockLoop:
    """One block's tuning state and its iteration.

    ``groups``: each trainable parameter with its learning rate; ``clamps``: called after each
    step to keep the clipping factors in bounds. ``best`` holds the parameters of the lowest
    loss so far (``best_loss`` at ``best_iter``); ``last_loss`` the latest iteration's loss.
    """

    block: nn.Module
    groups: list[tuple[nn.Parameter, float]]
    clamps: list[Callable[[], None]]
    inputs: torch.Tensor
    targets: torch.Tensor
    kwargs: dict[str, Any]
    settings: SignRoundSettings
    loss_fn: LossFn
    device: torch.device
    best: list[torch.Tensor] = field(init=False)
    best_loss: torch.Tensor = field(init=False)
    best_iter: torch.Tensor = field(init=False)
    first_loss: torch.Tensor = field(init=False)
    last_loss: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.best = [p.detach().clone() for p, _ in self.groups]
        self.best_loss = torch.tensor(float("inf"), device=self.device)
        self.best_iter = torch.tensor(0, device=self.device)
        self.first_loss = torch.tensor(float("nan"), device=self.device)
        self.last_loss = torch.tensor(float("nan"), device=self.device)

    def run(self, seed: int) -> None:
        """All ``settings.iters`` iterations, on sample batches drawn with ``seed``."""
        s = self.settings
        per_step = min(len(self.inputs), s.batch_size * s.gradient_accumulate_steps)
        order = sample_order(len(self.inputs), per_step, s.iters, seed)
        # -lr * (1 - step / iters) per iteration and parameter, rounded to float32 once here as
        # a Python float is rounded when passed as a kernel's alpha
        steps = [[-lr * (1.0 - step / s.iters) for _, lr in self.groups] for step in range(s.iters)]
        indices = torch.tensor(order, device=self.inputs.device)
        alphas = torch.tensor(steps, dtype=torch.float32, device=self.device)
        numbers = torch.arange(s.iters, device=self.device)
        if use_cuda_graphs(self.device, self.inputs, s):
            _replayed(self, indices, alphas, numbers)
            return
        for step in range(s.iters):
            self.iteration(indices[step], numbers[step], alphas[step])
            if step == 0:
                self.first_loss.copy_(self.last_loss)

    def iteration(self, indices: torch.Tensor, step: torch.Tensor, alphas: torch.Tensor) -> None:
        """One iteration on the samples ``indices`` (on the activations' device): ``step`` is its
        number, ``alphas`` the signed step size of each parameter (device tensors)."""
        s = self.settings
        amp_dtype = s.autocast_dtype(self.device)
        total = torch.zeros((), device=self.device)
        for start in range(0, len(indices), s.batch_size):
            chunk = indices[start : start + s.batch_size]
            batch = self.inputs.index_select(0, chunk).to(self.device, torch.float32, non_blocking=True)
            target = self.targets.index_select(0, chunk).to(self.device, torch.float32, non_blocking=True)
            # no autocast cache: a CUDA graph must not keep casts made outside it (and nothing
            # cast here is a leaf the cache would serve)
            with torch.autocast(
                self.device.type,
                dtype=amp_dtype or torch.float32,
                enabled=amp_dtype is not None,
                cache_enabled=False,
            ):
                output = block_output(self.block, batch, self.kwargs)
            loss = self.loss_fn(output, target)
            (loss / s.gradient_accumulate_steps).backward()
            total = total + loss.detach()
        self.last_loss.copy_(total / s.gradient_accumulate_steps)
        params = [p for p, _ in self.groups]
        _keep_if_better(self.last_loss, step, self.best_loss, self.best_iter, self.best, params)
        _sign_step(params, alphas)
        for clamp in self.clamps:
            clamp()


def _replayed(loop: BlockLoop, indices: torch.Tensor, alphas: torch.Tensor, numbers: torch.Tensor) -> None:
    """The iterations of ``loop``: the first few eager on a side stream, the rest replayed from
    a CUDA graph recorded after them (eager again if recording fails)."""
    side = _side_stream(loop.device)
    side.wait_stream(torch.cuda.current_stream(loop.device))
    with torch.cuda.stream(side):
        for step in range(GRAPH_WARMUP):
            loop.iteration(indices[step], numbers[step], alphas[step])
            if step == 0:
                loop.first_loss.copy_(loop.last_loss)
    torch.cuda.current_stream(loop.device).wait_stream(side)
    static = (indices[0].clone(), numbers[0].clone(), alphas[0].clone())
    try:
        graph = _record(loop, static)
    except RuntimeError as exc:  # a layer that cannot be recorded (host syncs, say)
        logger.warning("recording the tuning iteration as a CUDA graph failed (%s); running eagerly", exc)
        for step in range(GRAPH_WARMUP, len(indices)):
            loop.iteration(indices[step], numbers[step], alphas[step])
        return
    for step in range(GRAPH_WARMUP, len(indices)):
        for buffer, table in zip(static, (indices, numbers, alphas), strict=True):
            buffer.copy_(table[step], non_blocking=True)
        graph.replay()


#: Per device, the memory pool the graphs of every block share (each block's graph is done with
#: before the next one is recorded, so memory stays what one block needs) and the last graph
#: recorded into it. PyTorch frees a pool with its last graph and then refuses to record into
#: that pool again, so the last graph is kept until the next one is recorded.
_RECORDED: dict[torch.device, tuple[Any, torch.cuda.CUDAGraph]] = {}


def _record(loop: BlockLoop, static: tuple[torch.Tensor, ...]) -> torch.cuda.CUDAGraph:
    """One iteration of ``loop`` recorded as a CUDA graph into the device's shared pool."""
    if loop.device in _RECORDED:
        pool = _RECORDED[loop.device][0]
    else:
        with torch.cuda.device(loop.device):
            pool = torch.cuda.graph_pool_handle()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        loop.iteration(*static)
    _RECORDED[loop.device] = (pool, graph)
    return graph


def release_cuda_graphs() -> None:
    """Let the last recorded graphs and their memory pools go (a run's blocks are all tuned)."""
    _RECORDED.clear()


@functools.cache
def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """One warm-up stream per device for the whole run: each new stream would get a cuBLAS
    workspace of its own that is never given back."""
    return torch.cuda.Stream(device)


@torch.no_grad()
def _keep_if_better(
    loss: torch.Tensor,
    step: torch.Tensor,
    best_loss: torch.Tensor,
    best_iter: torch.Tensor,
    best: list[torch.Tensor],
    params: list[nn.Parameter],
) -> None:
    """Remember the parameters of the lowest loss so far, in place.

    On an accelerator a Python branch would wait for the device every iteration, so the copy is
    a ``torch.where``; on the CPU nothing is queued, and branching copies only on improvement.
    """
    if loss.device.type == "cpu":
        if loss < best_loss:
            best_loss.copy_(loss)
            best_iter.copy_(step)
            for kept, current in zip(best, params, strict=True):
                kept.copy_(current)
        return
    better = loss < best_loss
    best_loss.copy_(torch.where(better, loss, best_loss))
    best_iter.copy_(torch.where(better, step, best_iter))
    for kept, current in zip(best, params, strict=True):
        kept.copy_(torch.where(better, current, kept))


@torch.no_grad()
def _sign_step(params: list[nn.Parameter], alphas: torch.Tensor) -> None:
    # grad.sign() is -1, 0 or 1, so sign * alpha is exact and the sum rounds once, as
    # param.add_(sign, alpha=...) does
    for param, alpha in zip(params, alphas.unbind(), strict=True):
        if param.grad is not None:
            param.add_(param.grad.sign() * alpha)
            param.grad = None
