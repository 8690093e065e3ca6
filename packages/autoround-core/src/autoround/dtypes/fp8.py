"""FP8 E4M3 weights, registered as ``"fp"`` (Intel auto-round's ``data_type`` name; 8 bits only).

Each group shares one scale (float32 for row groups); each weight becomes an E4M3 float (largest 448). Intel
0.16.1's plain round-to-nearest, reproduced bit for bit
(``tests/fixtures/intel/fp_qdq.safetensors``). For an integer group size Intel resolves
``"fp"`` to ``fp8`` (``quant_fp8_sym`` in ``auto_round/data_type/fp8.py``); group size -1 is one
scale per output row, 0 one per tensor, N groups of N (Intel's usual grouping):

* ``scale = max(max|w_group| (in the weight's dtype) as float32 / 448, 1 / (448 * 512))``;
* a float16 weight is cast to bfloat16 first (Intel: "avoid NaN gradients"), then
  ``e4m3(clamp(w / scale + v, -448, 448))`` in float32, the E4M3 cast rounding to nearest even;
* result ``e4m3 * scale``, in the weight's dtype.

A tuple group size (Intel's ``FP8_BLOCK`` scheme: (128, 128) tiles of the weight) resolves
``block_fp8`` instead; a :class:`~autoround.schemes.Scheme` names it with ``block_shape``
(:meth:`FpDataType.for_tiles`). :func:`~autoround.dtypes.grouping.to_groups` cuts the tiles
(one group each, edge tiles zero-padded as Intel pads them), so the arithmetic is the row
groups' with one difference: ``block_fp8`` divides the tile maximum by 448 in the weight's dtype
(or the factor's, where SignRound's float32 ``max_scale`` promotes it), not in float32 (the
:meth:`FpDataType.for_tiles` type; :func:`block_qdq` is the whole round trip). SignRound tunes row
groups and tiles as Intel's wrapper does (:meth:`FpDataType.tuning_qdq`): the offset ``v`` added
before the E4M3 cast (one per weight) and the factor ``max_scale`` on each group's (tile's)
maximum (``min_scale`` is unused), kept in [0, 1], both through Intel's straight-through
estimator of the cast; a float32 factor makes the two scale formulas the same. Optimized RTN has
no search for FP8 (plain RTN; Intel's SignRoundV2 has no FP8 start either).
:meth:`FpDataType.quantize` returns the E4M3 values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from autoround.dtypes.base import QParams, RtnOnly, compose_qdq
from autoround.dtypes.e4m3 import E4M3_MAX, e4m3
from autoround.dtypes.fp8_fused import fp8_tuning_qdq
from autoround.dtypes.grouping import from_groups, to_groups
from autoround.dtypes.ste import Through, forward_only, straight_through

#: Smallest scale (Intel copies it from vLLM): ``1 / (448 * 512)``.
MIN_SCALE = float(1.0 / (E4M3_MAX * 512.0))


def _compute_dtype(weight: torch.Tensor) -> torch.Tensor:
    """Intel casts a float16 weight to bfloat16 before dividing (other dtypes as they are)."""
    return weight.to(torch.bfloat16) if weight.dtype == torch.float16 else weight


@dataclass(frozen=True)
class FpDataType(RtnOnly):
    """FP8 E4M3 weights, registered as ``"fp"``: round-to-nearest and SignRound tuning (see the
    module docstring). Any group size Intel's grouping allows (-1, 0, N) and 2-D tiles;
    symmetric only. ``tiles``: the groups are 2-D tiles (``block_fp8``'s scale arithmetic,
    :meth:`for_tiles`)."""

    name: str = "fp"
    allowed_bits: tuple[int, ...] = (8,)
    tiles: bool = False

    def for_tiles(self) -> FpDataType:
        """2-D tiles too (Intel's ``FP8_BLOCK``: :func:`block_qdq`): this type for groups that
        are tiles, whose scale ``max / 448`` is computed in the maximum's dtype (Intel's
        ``block_fp8``), not cast to float32 first (``fp8``)."""
        return dataclasses.replace(self, tiles=True)

    @property
    def tunable(self) -> bool:
        """SignRound tunes the offsets and the factor on each group maximum."""
        return True

    def group_range(self, grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each group's symmetric range ``(-max|w|, max|w|)`` (groups, 1) in the weight's dtype
        (informative: :meth:`tuning_qdq` takes the maximum through :meth:`qparams`, as the
        final :meth:`qdq` does, so the two agree bit for bit)."""
        amax = torch.abs(grouped).amax(dim=-1, keepdim=True)
        return -amax, amax

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
        """:meth:`qdq`'s values with Intel's straight-through gradients for ``v`` and
        ``max_scale`` (``min_scale`` is unused: it gets no gradient)."""
        qp = self.qparams(grouped, bits, sym, 1.0, max_scale)
        if qp.scale.dtype == torch.float32:  # always, with SignRound's float32 max_scale
            return fp8_tuning_qdq(_compute_dtype(grouped), v, qp.scale).to(grouped.dtype)
        codes = self._codes(grouped, qp, v, straight_through)
        return self.dequantize(codes, qp).to(grouped.dtype)

    def scheme_problem(self, bits: int, group_size: int, sym: bool) -> str | None:
        """E4M3 elements carry their own sign (no zero point)."""
        if not sym:
            return (
                f"sym={sym} is not allowed for data_type {self.name!r}: FP8 elements are "
                "sign-magnitude floats without a zero point (allowed: True)"
            )
        return None

    def qparams(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> QParams:
        """Each group's scale (groups, 1) and a zero point of 0: float32 for row groups; for
        tiles in the dtype of ``max|tile| * max_scale`` (the weight's for a float factor).

        ``max_scale`` shrinks each group maximum (as Intel's does); ``min_scale`` is ignored.
        """
        if isinstance(max_scale, torch.Tensor):
            max_scale = max_scale.reshape(-1).to(grouped.device)
        group_max = torch.abs(grouped).amax(dim=-1) * max_scale
        if not self.tiles:
            group_max = group_max.to(torch.float32)
        scale = torch.clip(group_max / E4M3_MAX, min=MIN_SCALE).unsqueeze(-1)
        return QParams(scale, torch.zeros_like(scale))

    def quantize(
        self, grouped: torch.Tensor, qp: QParams, bits: int, v: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        """E4M3 values (float32), after adding the offset ``v`` to the scaled weights."""
        return self._codes(grouped, qp, v, forward_only)

    @staticmethod
    def _codes(grouped: torch.Tensor, qp: QParams, v: torch.Tensor | float, through: Through) -> torch.Tensor:
        scaled = torch.clip(_compute_dtype(grouped) / qp.scale + v, -E4M3_MAX, E4M3_MAX)
        return e4m3(scaled, through)

    def dequantize(self, codes: torch.Tensor, qp: QParams) -> torch.Tensor:
        """``codes * scale`` (zero is 0)."""
        return codes * qp.scale

    def qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        v: torch.Tensor | float = 0.0,
        min_scale: torch.Tensor | float = 1.0,
        max_scale: torch.Tensor | float = 1.0,
    ) -> tuple[torch.Tensor, QParams]:
        """Quantize-dequantize in float32, returned in ``grouped``'s dtype (as Intel does)."""
        return compose_qdq(self, grouped, bits, sym, v, min_scale, max_scale)


def block_qdq(weight: torch.Tensor, block: tuple[int, int] = (128, 128)) -> tuple[torch.Tensor, torch.Tensor]:
    """Intel's ``block_fp8`` (FP8_BLOCK) quantize-dequantize of a 2-D weight in ``block`` tiles,
    as the layer quantizers do it (:func:`~autoround.dtypes.grouping.to_groups`' tiles and
    :meth:`FpDataType.tiled`).

    The weight is zero-padded to whole tiles; each tile's scale is ``max|tile| / 448`` clipped
    at :data:`MIN_SCALE`, computed in the weight's dtype; the tile's values are
    ``e4m3(clamp(w / scale, -448, 448)) * scale`` (float16 divided as bfloat16). Returns the
    result (the weight's shape and dtype) and the scales (row tiles, column tiles).
    """
    grouped, layout = to_groups(weight, block)
    qdq, qp = FpDataType(tiles=True).qdq(grouped, 8, True)
    return from_groups(qdq, layout), qp.scale.reshape(layout.tile_rows, layout.groups_per_row)
