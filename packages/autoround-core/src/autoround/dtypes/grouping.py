"""Cutting a weight matrix into quantization groups, and putting it back.

Intel auto-round's rules, which checkpoints depend on: group size -1 is one group per row; 0 is
one group for the whole tensor; a row narrower than the group size is one group; otherwise a row
of ``in`` inputs has ceil(in / group) groups and the last one is zero-padded to full size.

A ``(rows, columns)`` tuple cuts 2-D tiles instead (Intel's tuple ``group_size``, a scheme's
``block_shape``; FP8_BLOCK's (128, 128)): the weight is zero-padded at the bottom and the right to
whole tiles (a weight smaller than a tile is one padded tile, as Intel pads it), and each tile
becomes one group, a row of ``rows * columns`` elements, tiles in row-major order (tile row
``i``, tile column ``j`` is group ``i * column_tiles + j``). Every data type then sees plain
groups: its scale per group is a scale per tile, its offsets ``v`` one per (padded) weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: A group size (-1, 0 or N, along each row) or a 2-D tile (rows, columns).
Grouping = int | tuple[int, int]


@dataclass(frozen=True)
class GroupLayout:
    """What :func:`from_groups` needs to undo :func:`to_groups`: ``pad`` columns (and, for
    tiles, ``pad_rows`` rows) were added; ``block`` is the tile, or None for row groups."""

    shape: tuple[int, int]
    group_size: int
    pad: int
    block: tuple[int, int] | None = None
    pad_rows: int = 0

    @property
    def groups_per_row(self) -> int:
        """Number of groups along one row (1 for per-tensor, where there is one in total); for
        tiles, the number of tile columns."""
        cols = self.shape[1]
        if self.block is not None:
            return (cols + self.pad) // self.block[1]
        if self.group_size == 0:
            return 1
        return (cols + self.pad) // self.effective_group_size

    @property
    def tile_rows(self) -> int:
        """Number of tile rows (tiles); 1 for row groups, whose groups each span one row."""
        if self.block is None:
            return 1
        return (self.shape[0] + self.pad_rows) // self.block[0]

    @property
    def effective_group_size(self) -> int:
        """The group width actually used (the whole row for -1 or narrow rows; a tile's
        element count for tiles)."""
        rows, cols = self.shape
        if self.block is not None:
            return self.block[0] * self.block[1]
        if self.group_size == 0:
            return rows * cols
        if self.group_size == -1 or cols < self.group_size:
            return cols
        return self.group_size


def to_groups(
    weight: torch.Tensor, group_size: Grouping, pad_value: float = 0.0
) -> tuple[torch.Tensor, GroupLayout]:
    """Reshape a 2-D ``weight`` to (groups, group_width), padding a partial last group (or, for
    a tile ``group_size``, to (tiles, rows * columns), padding partial edge tiles with zeros)."""
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    if isinstance(group_size, tuple):
        return _to_tiles(weight, group_size)
    rows, cols = weight.shape
    layout = GroupLayout((rows, cols), group_size, 0)
    if group_size == 0:
        return weight.reshape(1, -1), layout
    if group_size == -1 or cols < group_size:
        return weight, layout
    pad = -cols % group_size
    if pad:
        weight = F.pad(weight, (0, pad), value=pad_value)
        layout = GroupLayout((rows, cols), group_size, pad)
    return weight.reshape(-1, group_size), layout


def _to_tiles(weight: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, GroupLayout]:
    """Intel's ``reshape_pad_tensor_by_group_size`` for a tuple, each tile flattened to a row."""
    rows, cols = weight.shape
    tile_rows, tile_cols = block
    if tile_rows <= 0 or tile_cols <= 0:
        raise ValueError(f"a tile is two positive integers (rows, columns), got {block!r}")
    pad_rows, pad_cols = -rows % tile_rows, -cols % tile_cols
    layout = GroupLayout((rows, cols), tile_cols, pad_cols, (tile_rows, tile_cols), pad_rows)
    padded = F.pad(weight, (0, pad_cols, 0, pad_rows))
    tiles = padded.reshape(layout.tile_rows, tile_rows, layout.groups_per_row, tile_cols).permute(0, 2, 1, 3)
    return tiles.reshape(-1, tile_rows * tile_cols), layout


def from_groups(grouped: torch.Tensor, layout: GroupLayout) -> torch.Tensor:
    """Inverse of :func:`to_groups`: drop the padding and restore the 2-D shape."""
    rows, cols = layout.shape
    if layout.block is not None:
        tile_rows, tile_cols = layout.block
        tiles = grouped.reshape(layout.tile_rows, layout.groups_per_row, tile_rows, tile_cols)
        padded = tiles.permute(0, 2, 1, 3).reshape(rows + layout.pad_rows, cols + layout.pad)
        return padded[:rows, :cols]
    if layout.pad:
        return grouped.reshape(rows, cols + layout.pad)[:, :cols]
    return grouped.reshape(rows, cols)
