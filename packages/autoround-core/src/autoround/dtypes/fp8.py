"""FP8 E4M3 weights, registered as ``"fp"`` (Intel auto-round's ``data_type`` name; 8 bits only).

Each group shares one float32 scale; each weight becomes an E4M3 float (largest 448). Intel
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
(:attr:`FpDataType.block_tiles`), and :func:`block_qdq` reproduces it for callers that tile
themselves (its scale is computed in the weight's dtype, not float32); no layer quantizer tiles
yet, so pre-flight refuses a ``block_shape`` plan. SignRound tunes row groups as Intel's wrapper
does (:meth:`FpDataType.tuning_qdq`): the offset ``v`` added before the E4M3 cast and the factor
``max_scale`` on each group maximum (``min_scale`` is unused), kept in [0, 1], both through
Intel's straight-through estimator of the cast. Optimized RTN has no search for FP8 (plain RTN;
Intel's SignRoundV2 has no FP8 start either). :meth:`FpDataType.quantize` returns the E4M3 values.
No format saves FP8 yet (formats' ``Capabilities``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from autoround.dtypes.base import QParams, RtnOnly, compose_qdq
from autoround.dtypes.ste import Through, forward_only, straight_through

E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)
#: Smallest scale (Intel copies it from vLLM): ``1 / (448 * 512)``.
MIN_SCALE = float(1.0 / (E4M3_MAX * 512.0))


def e4m3(x: torch.Tensor, through: Through = forward_only) -> torch.Tensor:
    """``x`` rounded to FP8 E4M3 (nearest even), in ``x``'s dtype. Written as Intel's
    straight-through estimator computes it, ``(e4m3(x) - x) + x``, which equals the cast except
    that a negative value rounding to zero gives +0.0; ``through`` says whether the gradient
    passes (:mod:`autoround.dtypes.ste`)."""
    return through(x.to(torch.float8_e4m3fn).to(x.dtype), x)


def _compute_dtype(weight: torch.Tensor) -> torch.Tensor:
    """Intel casts a float16 weight to bfloat16 before dividing (other dtypes as they are)."""
    return weight.to(torch.bfloat16) if weight.dtype == torch.float16 else weight


@dataclass(frozen=True)
class FpDataType(RtnOnly):
    """FP8 E4M3 weights, registered as ``"fp"``: round-to-nearest and SignRound tuning (see the
    module docstring). Any group size Intel's grouping allows (-1, 0, N); symmetric only."""

    name: str = "fp"
    allowed_bits: tuple[int, ...] = (8,)

    @property
    def tunable(self) -> bool:
        """SignRound tunes the offsets and the factor on each group maximum."""
        return True

    def group_range(self, grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each group's symmetric range ``(-max|w|, max|w|)`` (groups, 1) in the weight's dtype
        (informative: :meth:`tuning_qdq` takes the maximum through :meth:`qparams`, as the
        final :meth:`qdq` does, so the two agree bit for bit)."""
        amax = torch.max(torch.abs(grouped), dim=-1, keepdim=True)[0]
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
        codes = self._codes(grouped, qp, v, straight_through)
        return self.dequantize(codes, qp).to(grouped.dtype)

    @property
    def block_tiles(self) -> bool:
        """2-D tiles too (Intel's ``FP8_BLOCK``: :func:`block_qdq`)."""
        return True

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
        """Each group's float32 scale (groups, 1) and a zero point of 0.

        ``max_scale`` shrinks each group maximum (as Intel's does); ``min_scale`` is ignored.
        """
        if isinstance(max_scale, torch.Tensor):
            max_scale = max_scale.reshape(-1).to(grouped.device)
        group_max = torch.max(torch.abs(grouped), dim=-1)[0] * max_scale
        scale = torch.clip(group_max.to(torch.float32) / E4M3_MAX, min=MIN_SCALE).unsqueeze(-1)
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
    """Intel's ``block_fp8`` (FP8_BLOCK) quantize-dequantize of a 2-D weight in ``block`` tiles.

    The weight is zero-padded to whole tiles; each tile's scale is ``max|tile| / 448`` clipped
    at :data:`MIN_SCALE`, computed in the weight's dtype (float16 as bfloat16); the tile's
    values are ``e4m3(clamp(w / scale, -448, 448)) * scale`` in that dtype. Returns the result
    (the weight's shape and dtype) and the scales (row tiles, column tiles).
    """
    rows, cols = weight.shape
    tile_rows, tile_cols = block
    pad_rows, pad_cols = -rows % tile_rows, -cols % tile_cols
    padded = F.pad(weight, (0, pad_cols, 0, pad_rows))
    tiles = padded.view(padded.shape[0] // tile_rows, tile_rows, padded.shape[1] // tile_cols, tile_cols)
    tiles = tiles.permute(0, 2, 1, 3)
    scale = torch.clip(tiles.abs().amax(dim=(-2, -1)) * 1.0 / E4M3_MAX, min=MIN_SCALE)
    tile_scale = scale.unsqueeze(-1).unsqueeze(-1)
    # Intel adds its offset v (0 here) before clamping; -0.0 + 0 is +0.0, so it is kept.
    codes = e4m3(torch.clip(_compute_dtype(tiles) / tile_scale + 0, -E4M3_MAX, E4M3_MAX))
    qdq = (codes * tile_scale).permute(0, 2, 1, 3).reshape(padded.shape)
    return qdq[:rows, :cols].to(weight.dtype), scale
