"""Kernel configurations for :mod:`autoround.kernels.triton_gemm`, and how one is chosen per shape.

A heuristic gives a good configuration without any timing (used under ``TRITON_INTERPRET=1``
and when ``AUTOROUND_TRITON_AUTOTUNE=0``). On a GPU the first call of each shape times a small set
of candidates around it with ``triton.testing.do_bench`` and caches the fastest for the process;
shapes are keyed by the exact M up to 16 (decode) and by M's power-of-two bucket above.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache

import torch

log = logging.getLogger(__name__)

#: M at and above which the weight is dequantized once and multiplied by the vendor GEMM.
DENSE_MIN_M = 256
#: M at and below which the decode kernel (raw-code products, split K) is used.
DECODE_MAX_M = 16


@dataclass(frozen=True)
class KernelConfig:
    """Tile shape and launch options of one kernel launch (``dense`` = dequantize + vendor GEMM)."""

    block_m: int = 16
    block_n: int = 128
    block_k: int = 64
    split_k: int = 1
    fold_affine: bool = True
    unpack_reshape: bool = False
    num_warps: int = 4
    num_stages: int = 3
    dense: bool = False
    gemv: bool = False

    @property
    def label(self) -> str:
        """A short description for benchmark tables."""
        if self.dense:
            return "dequantize + GEMM"
        kind = "gemv" if self.gemv else "decode" if self.fold_affine else "tiles"
        unpack = " reshape" if self.unpack_reshape else ""
        return (
            f"{kind} {self.block_m}x{self.block_n}x{self.block_k} split{self.split_k} "
            f"w{self.num_warps} s{self.num_stages}{unpack}"
        )

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n", "block_k"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, got {value}")
        if self.block_m not in (1,) and self.block_m < 16:
            raise ValueError(f"block_m must be 1 or at least 16 (tl.dot's minimum), got {self.block_m}")
        if self.block_k < 32:
            raise ValueError(
                f"block_k must be at least 32 (one int32 word of 2-bit codes), got {self.block_k}"
            )
        if self.gemv and self.block_m != 1:
            raise ValueError(f"the GEMV kernel computes one row: block_m must be 1, got {self.block_m}")
        if self.split_k < 1:
            raise ValueError(f"split_k must be at least 1, got {self.split_k}")


Problem = tuple[int, int, int, int, int, torch.dtype]  # (M, N, K, bits, group_width, activation dtype)


def heuristic_config(problem: Problem, multiprocessors: int = 132) -> KernelConfig:
    """A configuration chosen from the shape alone (no timing), after what autotuning picked on an H100."""
    m, n, k, _, group_width, _ = problem
    if m >= DENSE_MIN_M:
        return KernelConfig(dense=True)
    if m > DECODE_MAX_M:
        return KernelConfig(
            block_m=128, block_n=128, block_k=_block_k_for(group_width, 64), fold_affine=False, num_warps=8
        )
    block_k = _block_k_for(group_width, 128)
    gemv = m == 1 and group_width % block_k == 0
    block_n = 64 if gemv else 128
    # Enough programs (about eight per multiprocessor) that loads wait on bandwidth, not latency.
    tiles = -(-n // block_n)
    split_k = min(max(1, k // block_k), _power_of_two_at_most(max(1, 8 * multiprocessors // tiles)))
    if gemv:
        return KernelConfig(block_m=1, block_n=block_n, block_k=block_k, split_k=split_k, gemv=True)
    return KernelConfig(block_m=16, block_n=block_n, block_k=block_k, split_k=split_k, unpack_reshape=True)


def _power_of_two_at_most(value: int) -> int:
    return 1 << (value.bit_length() - 1)


def candidate_configs(problem: Problem, multiprocessors: int) -> list[KernelConfig]:
    """The configurations timed for ``problem``: the heuristic's and its neighbours."""
    base = heuristic_config(problem, multiprocessors)
    if base.dense:
        mid = KernelConfig(block_m=128, block_n=128, block_k=_block_k_for(problem[4], 64), fold_affine=False)
        return [base, mid, replace(mid, num_warps=8)]
    if not base.fold_affine:
        return [
            base,
            replace(base, block_m=32),
            replace(base, block_m=128, num_warps=8),
            replace(base, block_n=64),
        ]
    if base.gemv:
        base = replace(base, gemv=False, block_n=128, unpack_reshape=True)
    splits = _splits(problem, base)
    found = []
    for block_n in (64, 128):
        for split_k in splits:
            for unpack_reshape in (False, True):
                found.append(replace(base, block_n=block_n, split_k=split_k, unpack_reshape=unpack_reshape))
    found += [replace(base, block_n=64, split_k=split_k, num_warps=8) for split_k in splits]
    if problem[0] == 1:
        found += [replace(base, block_m=16, split_k=split_k) for split_k in splits]
        for block_k in dict.fromkeys((_block_k_for(problem[4], 128), _block_k_for(problem[4], 64))):
            gemv = replace(base, gemv=True, block_k=block_k, unpack_reshape=False)
            for block_n in (32, 64, 128):
                for split_k in dict.fromkeys((1, *splits, 64)):
                    if split_k <= max(1, problem[2] // block_k):
                        found.append(replace(gemv, block_n=block_n, split_k=split_k))
    return found


def _splits(problem: Problem, base: KernelConfig) -> list[int]:
    """K splits worth timing: a K loop of many dependent iterations leaves loads waiting on latency."""
    k_blocks = max(1, problem[2] // base.block_k)
    return [s for s in dict.fromkeys((base.split_k, 4, 8, 16, 32)) if s <= k_blocks]


def choose_config(problem: Problem, run: Callable[[KernelConfig], torch.Tensor]) -> KernelConfig:
    """The cached configuration for ``problem``; timed on first use when on a GPU and allowed."""
    key = _cache_key(problem)
    found = _CHOSEN.get(key)
    if found is not None:
        return found
    if _autotune_enabled():
        found = _time_candidates(problem, run)
    else:
        found = heuristic_config(problem, _multiprocessors())
    _CHOSEN[key] = found
    return found


_CHOSEN: dict[tuple, KernelConfig] = {}


def _time_candidates(problem: Problem, run: Callable[[KernelConfig], torch.Tensor]) -> KernelConfig:
    from triton.testing import do_bench_cudagraph

    timings = []
    for config in candidate_configs(problem, _multiprocessors()):
        try:
            run(config)  # compile outside the graph capture
            # Graph replays time the GPU alone: eager timing of microsecond kernels measures the launch.
            timings.append((do_bench_cudagraph(lambda c=config: run(c), rep=20), config))
        except Exception as error:  # a config that does not fit the chip (shared memory, registers)
            log.debug("kernel config %s failed on %s: %s", config, problem, error)
    if not timings:
        return heuristic_config(problem, _multiprocessors())
    best_ms, best = min(timings, key=lambda t: t[0])
    log.debug("kernel config for %s: %s (%.1f us)", problem, best, best_ms * 1e3)
    return best


def _cache_key(problem: Problem) -> tuple:
    m, n, k, bits, group_width, dtype = problem
    bucket = m if m <= DECODE_MAX_M else 1 << (m - 1).bit_length()
    return (bucket, n, k, bits, group_width, dtype)


def _block_k_for(group_width: int, preferred: int) -> int:
    """The largest power of two up to ``preferred`` that divides the group, so a tile sits in one group."""
    for block_k in (128, 64, 32):
        if block_k <= preferred and group_width % block_k == 0:
            return block_k
    return 32


def _autotune_enabled() -> bool:
    if os.environ.get("TRITON_INTERPRET") == "1" or not torch.cuda.is_available():
        return False
    return os.environ.get("AUTOROUND_TRITON_AUTOTUNE", "1") != "0"


@cache
def _multiprocessors() -> int:
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).multi_processor_count
    return 132
