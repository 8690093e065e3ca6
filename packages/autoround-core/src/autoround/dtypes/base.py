"""The interface every data type implements, and the per-layer quantization parameters.

A data type owns every quantize-dequantize variant of its codes: plain min/max, the fused step
SignRound tunes, optimized RTN's searched scale, and the searched-scale start SignRound tunes a
factor on. Algorithms ask it (:attr:`DataType.tunable`, :meth:`DataType.searches_scale`) instead
of testing ``data_type`` names. :class:`RtnOnly` gives the answers of a type that supports plain
round-to-nearest only, so a new type needs only its formulas.

A type with a per-tensor statistic that the layers a runtime fuses must share (NVFP4's max|W|,
which its global scale is derived from) also implements :class:`SharedStatistic`; algorithms
find it with :func:`shared_statistic_type` and quantize each member of a fused group with
:func:`with_shared_statistic` (:mod:`autoround.algorithms.fused_scales` finds the groups).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class QParams:
    """Per-group quantization parameters of one weight, in grouped layout (one row per group).

    ``scale`` has shape (groups_total, 1) in the scale dtype (fp16 for integers, as Intel stores
    it); ``zero`` has the same shape and holds the integer zero point (for symmetric integers the
    constant ``2**(bits-1)``), stored as float so that it broadcasts in the dequantize formula.
    """

    scale: torch.Tensor
    zero: torch.Tensor


class DataType(Protocol):
    """Pure tensor math of one data type. ``grouped`` is a (groups, group_size) float tensor."""

    # Read-only members, so that frozen dataclasses implement the protocol.
    @property
    def name(self) -> str: ...

    @property
    def allowed_bits(self) -> tuple[int, ...]: ...

    @property
    def tunable(self) -> bool:
        """Whether SignRound can tune it (:meth:`group_range` and :meth:`tuning_qdq` work)."""
        ...

    def for_tiles(self) -> DataType | None:
        """This type's arithmetic for groups that are 2-D weight tiles sharing one scale (a
        scheme's ``block_shape``, Intel's tuple ``group_size``); None: row groups only."""
        ...

    def searches_scale(self, bits: int, sym: bool) -> bool:
        """Whether optimized RTN's importance-weighted scale search (:meth:`opt_rtn_qdq`) and
        SignRound's searched-scale start (:meth:`searched_scale`, :meth:`scaled_qdq`) apply to
        such layers; where not, both algorithms fall back to plain min/max RTN."""
        ...

    def scheme_problem(self, bits: int, group_size: int, sym: bool) -> str | None:
        """Why a scheme of this type with these fields is invalid (naming the field), or None;
        :class:`~autoround.schemes.Scheme` raises it. For constraints beyond ``allowed_bits``
        (MX floats: blocks of 32, symmetric only)."""
        ...

    # --- plain round-to-nearest (every type) ---

    def qparams(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> QParams:
        """Scales and zero points of each group, optionally shrunk by clipping factors."""
        ...

    def quantize(
        self, grouped: torch.Tensor, qp: QParams, bits: int, v: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        """Unsigned integer codes in [0, 2**bits - 1] (as float, with a straight-through
        gradient), after adding the rounding offset ``v`` before rounding."""
        ...

    def dequantize(self, codes: torch.Tensor, qp: QParams) -> torch.Tensor:
        """Codes back to real values (float32 or wider of the inputs)."""
        ...

    def qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        v: torch.Tensor | float = 0.0,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> tuple[torch.Tensor, QParams]:
        """Quantize-dequantize in one call, in ``grouped``'s dtype."""
        ...

    # --- SignRound (where tunable) ---

    def group_range(self, grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-group statistics that stay fixed while a weight is tuned."""
        ...

    def tuning_qdq(
        self,
        grouped: torch.Tensor,
        group_range: tuple[torch.Tensor, torch.Tensor],
        bits: int,
        sym: bool,
        v: torch.Tensor,
        min_scale: torch.Tensor,
        max_scale: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`qdq`'s values for the tuning loop, with gradients for v and the factors."""
        ...

    # --- searched scales (where searches_scale) ---

    def opt_rtn_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        group_size: int,
        imatrix: torch.Tensor | None,
        exact: bool,
        refine_steps: int,
        out_dtype: torch.dtype,
    ) -> tuple[torch.Tensor, QParams]:
        """Optimized RTN: quantize-dequantize (in ``out_dtype``) with each group's scale searched
        to minimize the importance-weighted error. ``imatrix`` is the layer's per-input-channel
        importance (in,) or None (uniform); ``exact`` asks for Intel's pick bit for bit;
        ``refine_steps`` rounds of least-squares refinement follow the search."""
        ...

    def searched_scale(
        self, grouped: torch.Tensor, bits: int, group_size: int, imatrix: torch.Tensor | None
    ) -> torch.Tensor:
        """SignRound's searched start of each group, (groups, 1) float32, from optimized RTN's
        pick with its default settings: the scale itself (integers) or what the type derives it
        from (MX floats, NVFP4: the multiplier of the group maximum, Intel's ``init_scale``).
        Only :meth:`scaled_qdq` / :meth:`scaled_tuning_qdq` of the same type read it."""
        ...

    def scaled_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor | float,
    ) -> tuple[torch.Tensor, QParams]:
        """Quantize-dequantize with the start ``base_scale`` (:meth:`searched_scale`) times
        ``factor`` (groups,), in ``grouped``'s dtype."""
        ...

    def scaled_tuning_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`scaled_qdq`'s values for the tuning loop, with gradients for v and the factor."""
        ...


@runtime_checkable
class SharedStatistic(Protocol):
    """What a data type with a per-tensor statistic offers besides :class:`DataType`.

    vLLM fuses q/k/v and gate/up (MoE: w1/w3) into one layer that keeps one per-tensor scale, so
    such layers must be quantized under one statistic: that of the weight they fuse into.
    """

    def group_statistic(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """The statistic (0-dim float32, on the first weight's device) of the weight the
        ``weights`` fuse into (NVFP4: the largest max|W| of them)."""
        ...

    def sharing(self, statistic: torch.Tensor) -> DataType:
        """The same type with its per-tensor statistic fixed to ``statistic``: every
        quantize-dequantize variant then uses it instead of the one of the tensor given."""
        ...


def shared_statistic_type(dtype: DataType) -> SharedStatistic | None:
    """``dtype`` as a :class:`SharedStatistic` when it has a per-tensor statistic, else None."""
    return dtype if isinstance(dtype, SharedStatistic) else None


def with_shared_statistic(dtype: DataType, statistic: torch.Tensor | None) -> DataType:
    """``dtype`` with its per-tensor statistic fixed (``dtype`` itself for None).

    Raises:
        ValueError: ``statistic`` is given for a type that has none.
    """
    if statistic is None:
        return dtype
    shared = shared_statistic_type(dtype)
    if shared is None:
        raise ValueError(f"data type {dtype.name!r} has no per-tensor statistic to share")
    return shared.sharing(statistic)


def compose_qdq(
    dtype: DataType,
    grouped: torch.Tensor,
    bits: int,
    sym: bool,
    v: torch.Tensor | float = 0.0,
    min_scale: torch.Tensor | float = 1.0,
    max_scale: torch.Tensor | float = 1.0,
) -> tuple[torch.Tensor, QParams]:
    """:meth:`DataType.qdq` from the type's own parts: ``qparams``, ``quantize``, ``dequantize``,
    the result in ``grouped``'s dtype. Types whose qdq is just that call this."""
    qp = dtype.qparams(grouped, bits, sym, min_scale, max_scale)
    return dtype.dequantize(dtype.quantize(grouped, qp, bits, v), qp).to(grouped.dtype), qp


def _unsupported(dtype: object, what: str) -> NoReturn:
    raise NotImplementedError(f"data type {getattr(dtype, 'name', dtype)!r} does not support {what}")


class RtnOnly:
    """The :class:`DataType` members of a type that supports plain round-to-nearest only.

    A subclass adds ``name``, ``allowed_bits`` and the four plain methods (:meth:`qparams`,
    :meth:`quantize`, :meth:`dequantize`, :meth:`qdq`); SignRound then refuses its layers and
    optimized RTN quantizes them with plain RTN. A subclass that overrides :attr:`tunable`,
    :meth:`group_range` and :meth:`tuning_qdq` (the float types) keeps the other defaults.
    """

    @property
    def tunable(self) -> bool:
        """Not tunable by SignRound."""
        return False

    def for_tiles(self) -> DataType | None:
        """Row groups only (no 2-D weight tiles)."""
        return None

    def searches_scale(self, bits: int, sym: bool) -> bool:
        """No searched scales: optimized RTN falls back to plain RTN."""
        return False

    def scheme_problem(self, bits: int, group_size: int, sym: bool) -> str | None:
        """No constraints beyond ``allowed_bits``."""
        return None

    def group_range(self, grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unsupported (not tunable)."""
        _unsupported(self, "SignRound tuning")

    def tuning_qdq(
        self,
        grouped: torch.Tensor,
        group_range: tuple[torch.Tensor, torch.Tensor],
        bits: int,
        sym: bool,
        v: torch.Tensor,
        min_scale: torch.Tensor,
        max_scale: torch.Tensor,
    ) -> torch.Tensor:
        """Unsupported (not tunable)."""
        _unsupported(self, "SignRound tuning")

    def opt_rtn_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        group_size: int,
        imatrix: torch.Tensor | None,
        exact: bool,
        refine_steps: int,
        out_dtype: torch.dtype,
    ) -> tuple[torch.Tensor, QParams]:
        """Unsupported (no scale search)."""
        _unsupported(self, "a searched scale")

    def searched_scale(
        self, grouped: torch.Tensor, bits: int, group_size: int, imatrix: torch.Tensor | None
    ) -> torch.Tensor:
        """Unsupported (no scale search)."""
        _unsupported(self, "a searched scale")

    def scaled_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor | float,
    ) -> tuple[torch.Tensor, QParams]:
        """Unsupported (no scale search)."""
        _unsupported(self, "a searched scale")

    def scaled_tuning_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """Unsupported (no scale search)."""
        _unsupported(self, "a searched scale")
