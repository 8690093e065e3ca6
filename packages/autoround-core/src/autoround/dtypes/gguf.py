"""llama.cpp's GGUF block types as data types: ``"gguf"`` (``q4_0``, ``q4_1``, ``q5_0``, ``q5_1``,
``q8_0``: blocks of 32 weights) and ``"gguf_k"`` (``q2_k`` ... ``q6_k``: super-blocks of 256).

A scheme's ``bits``, ``sym`` and ``group_size`` pick the block type
(:data:`~autoround.dtypes.gguf_blocks.BLOCK_TYPES`); the numerics are llama.cpp's own
(:mod:`~autoround.dtypes.gguf_legacy`, :mod:`~autoround.dtypes.gguf_kquants`).

* Round-to-nearest (:meth:`GgufDataType.qdq`) is what ``llama-quantize`` does without an
  importance matrix.
* Optimized RTN (:meth:`GgufDataType.opt_rtn_qdq`) is llama.cpp's importance-weighted search, the
  importance being the layer's squared calibration inputs (our imatrix, as ``llama-imatrix``
  computes it up to a constant factor, which the search does not see).
* SignRound tunes the block fields (:mod:`autoround.dtypes.gguf_tuning`).

Grouped weights are one group per row; a K-quant's rows come in runs of 256 / group (one
super-block), so a layer's input width must be a multiple of the type's block (32 or 256):
the GGUF format's plan applies llama.cpp's fallback to layers where it is not. The parameters
(:class:`~autoround.dtypes.base.QParams`) are ggml's fields per group: ``scale`` holds the fp16
floats (``[d]``, ``[d, m]`` or ``[d, dmin]``, a super-block's repeated on its rows), ``zero``
the integers (the code offset for the 32-weight types; ``[sc]`` or ``[sc, m]`` for K-quants).
:meth:`GgufDataType.quantize` returns signed levels (stored code minus the type's offset), so
that :meth:`~GgufDataType.dequantize` needs no bit width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from autoround.dtypes import gguf_tuning as tuning
from autoround.dtypes.base import DataType, QParams
from autoround.dtypes.gguf_blocks import BLOCK_TYPES, BlockType, block_type, dequantize, encode

_NEUTRAL = 1.0


def _is_neutral(value: torch.Tensor | float, neutral: float) -> bool:
    if isinstance(value, torch.Tensor):
        return bool((value == neutral).all())
    return value == neutral


def row_structure(grouped: torch.Tensor, imatrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's importance (groups, group) and its row's mean square (groups, 1), rows being
    ``imatrix.numel()`` weights wide."""
    width = imatrix.numel()
    group = grouped.shape[1]
    per_row = width // group
    if width % group or grouped.shape[0] % per_row:
        raise ValueError(f"an importance of {width} inputs does not fit groups of {group}")
    x = grouped.float()
    qw = imatrix.float().to(x.device).reshape(1, per_row, group).expand(x.shape[0] // per_row, -1, -1)
    mean_square = (x.reshape(-1, width) ** 2).sum(-1, keepdim=True) / width
    return qw.reshape(-1, group), mean_square.repeat_interleave(per_row, dim=0)


@dataclass(frozen=True)
class GgufDataType:
    """The GGUF block types of one family (``name``: ``"gguf"`` or ``"gguf_k"``)."""

    name: str = "gguf"

    @property
    def blocks(self) -> list[BlockType]:
        """This family's block types."""
        return [entry for entry in BLOCK_TYPES.values() if entry.data_type == self.name]

    @property
    def allowed_bits(self) -> tuple[int, ...]:
        """The bit widths of this family's types."""
        return tuple(sorted({entry.bits for entry in self.blocks}))

    @property
    def tunable(self) -> bool:
        """SignRound tunes the rounding and the block fields (:mod:`~autoround.dtypes.gguf_tuning`)."""
        return True

    def searches_scale(self, bits: int, sym: bool) -> bool:
        """Every K-quant and the symmetric 32-weight types (llama.cpp's weighted searches);
        ``q4_1`` / ``q5_1`` take plain round-to-nearest in optimized RTN and SignRound's classic
        path (the searched-scale calls carry no symmetry to tell them from ``q4_0`` / ``q5_0``)."""
        return sym or self.name == "gguf_k"

    def _searched_block(self, bits: int, group: int) -> BlockType:
        """The block type of a searched-scale call: the one of these bits and group that searches."""
        for entry in self.blocks:
            if (entry.bits, entry.group) == (bits, group) and self.searches_scale(bits, entry.sym):
                return entry
        raise ValueError(f"no {self.name} block type of {bits} bits and group {group} searches its scale")

    def for_tiles(self) -> DataType | None:
        """Row groups only (no 2-D weight tiles)."""
        return None

    def scheme_problem(self, bits: int, group_size: int, sym: bool) -> str | None:
        """A combination of fields that names no block type, with the types listed."""
        if block_type(self.name, bits, sym, group_size) is not None:
            return None
        types = ", ".join(entry.describe() for entry in self.blocks)
        return (
            f"data_type {self.name!r} has no block type with bits={bits}, "
            f"{'sym' if sym else 'asym'}, group_size={group_size}; its types: {types}"
        )

    def block(self, bits: int, sym: bool, group: int) -> BlockType:
        """The block type of grouped weights ``group`` wide."""
        found = block_type(self.name, bits, sym, group)
        if found is None:
            raise ValueError(self.scheme_problem(bits, group, sym))
        return found

    def _checked(self, grouped: torch.Tensor, bits: int, sym: bool) -> BlockType:
        found = self.block(bits, sym, grouped.shape[1])
        if grouped.shape[0] % (found.block // found.group):
            raise ValueError(
                f"{found.name} quantizes super-blocks of {found.block} weights: the rows must be a "
                f"multiple of {found.block} wide (the GGUF format's plan falls back to another type)"
            )
        return found

    def _result(
        self, block: BlockType, grouped: torch.Tensor, codes: torch.Tensor, qp: QParams
    ) -> tuple[torch.Tensor, QParams]:
        values = dequantize(block.super_block, codes - block.offset, qp.scale, qp.zero)
        return values.to(grouped.dtype), qp

    def qparams(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        min_scale: torch.Tensor | float = _NEUTRAL,
        max_scale: torch.Tensor | float = _NEUTRAL,
    ) -> QParams:
        """The block fields llama.cpp's round-to-nearest picks (clipping factors: see :meth:`qdq`)."""
        return self.qdq(grouped, bits, sym, 0.0, min_scale, max_scale)[1]

    def quantize(
        self, grouped: torch.Tensor, qp: QParams, bits: int, v: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        """Signed levels (stored code minus the type's offset) nearest to ``grouped`` under ``qp``."""
        sym = qp.scale.shape[1] == 1
        return encode(self.block(bits, sym, grouped.shape[1]), grouped, qp.scale, qp.zero, v)

    def dequantize(self, codes: torch.Tensor, qp: QParams) -> torch.Tensor:
        """Signed levels back to values, float32, in ggml's op order."""
        return dequantize(self.name == "gguf_k", codes, qp.scale, qp.zero)

    def qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        sym: bool,
        v: torch.Tensor | float = 0.0,
        min_scale: torch.Tensor | float = _NEUTRAL,
        max_scale: torch.Tensor | float = _NEUTRAL,
    ) -> tuple[torch.Tensor, QParams]:
        """llama.cpp's round-to-nearest (``quantize_row_*_ref``); with SignRound's offsets or
        clipping factors, the tuned fields (:meth:`tuned_qdq`). Values in ``grouped``'s dtype."""
        block = self._checked(grouped, bits, sym)
        if not (_is_neutral(v, 0.0) and _is_neutral(min_scale, 1.0) and _is_neutral(max_scale, 1.0)):
            return self.tuned_qdq(block, grouped, v, min_scale, max_scale)
        codes, floats, ints = block.rtn(grouped.float())
        return self._result(block, grouped, codes, QParams(floats, ints))

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
        """llama.cpp's importance-weighted search (``quantize_row_*_impl``); without an importance
        (8-bit layers, layers outside the blocks) its round-to-nearest, as llama.cpp does. ``exact``
        and ``refine_steps`` (the integer type's options) do not apply."""
        block = self._checked(grouped, bits, sym)
        if imatrix is None:
            codes, floats, ints = block.rtn(grouped.float())
        else:
            qw, row_ms = row_structure(grouped, imatrix)
            codes, floats, ints = block.weighted(grouped.float(), qw, row_ms)
        values, qp = self._result(block, grouped, codes, QParams(floats, ints))
        return values.to(out_dtype), qp

    # --- SignRound (dtypes/gguf_tuning.py) ---

    def group_range(self, grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each group's (min <= 0, max), fixed while a weight is tuned."""
        return tuning.minmax_range(grouped)

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
        """The classic path's values with gradients for ``v`` and the clipping factors."""
        block = self._checked(grouped, bits, sym)
        scale, the_min = tuning.minmax_scale(block, group_range, min_scale, max_scale)
        return tuning.tuned_values(block, grouped.float(), scale, the_min, v)[0].to(grouped.dtype)

    def tuned_qdq(
        self,
        block: BlockType,
        grouped: torch.Tensor,
        v: torch.Tensor | float,
        min_scale: torch.Tensor | float,
        max_scale: torch.Tensor | float,
    ) -> tuple[torch.Tensor, QParams]:
        """The classic path's final values and fields."""
        with torch.no_grad():
            scale, the_min = tuning.minmax_scale(block, self.group_range(grouped), min_scale, max_scale)
            values, qp = tuning.tuned_values(block, grouped.float(), scale, the_min, v)
        return values.to(grouped.dtype), qp

    @torch.no_grad()
    def searched_scale(
        self, grouped: torch.Tensor, bits: int, group_size: int, imatrix: torch.Tensor | None
    ) -> torch.Tensor:
        """llama.cpp's search of each group's scale (and min): (groups, 1) or (groups, 2)."""
        block = self._searched_block(bits, grouped.shape[1])
        if imatrix is None:
            return tuning.searched_scale(block, grouped, None, None)
        qw, row_ms = row_structure(grouped, imatrix)
        sigma2 = tuning.super_block_sigma2(grouped, block) if block.super_block else row_ms
        return tuning.searched_scale(block, grouped, qw, sigma2)

    def _scaled(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor | float,
    ) -> tuple[torch.Tensor, QParams]:
        block = self._searched_block(bits, grouped.shape[1])
        base = base_scale.to(grouped.device)
        the_min = base[:, 1] if base.shape[1] > 1 else None
        return tuning.tuned_values(block, grouped.float(), base[:, 0] * factor.reshape(-1), the_min, v)

    def scaled_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor | float,
    ) -> tuple[torch.Tensor, QParams]:
        """Values and fields from the searched scale times ``factor`` (min kept)."""
        with torch.no_grad():
            values, qp = self._scaled(grouped, bits, base_scale, factor, v)
        return values.to(grouped.dtype), qp

    def scaled_tuning_qdq(
        self,
        grouped: torch.Tensor,
        bits: int,
        base_scale: torch.Tensor,
        factor: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`scaled_qdq`'s values with gradients for ``v`` and the factor."""
        return self._scaled(grouped, bits, base_scale, factor, v)[0].to(grouped.dtype)
