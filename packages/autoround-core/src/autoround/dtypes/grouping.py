"""Cutting a weight matrix into quantization groups, and putting it back.

Intel auto-round's rules, which checkpoints depend on: group size -1 is one group per row; 0 is
one group for the whole tensor; a row narrower than the group size is one group; otherwise a row
of ``in`` inputs has ceil(in / group) groups and the last one is zero-padded to full size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class GroupLayout:
    """What :func:`from_groups` needs to undo :func:`to_groups`."""

    shape: tuple[int, int]
    group_size: int
    pad: int

    @property
    def groups_per_row(self) -> int:
        """Number of groups along one row (1 for per-tensor, where there is one in total)."""
        cols = self.shape[1]
        if self.group_size == 0:
            return 1
        return (cols + self.pad) // self.effective_group_size

    @property
    def effective_group_size(self) -> int:
        """The group width actually used (the whole row for -1 or narrow rows)."""
        rows, cols = self.shape
        if self.group_size == 0:
            return rows * cols
        if self.group_size == -1 or cols < self.group_size:
            return cols
        return self.group_size


def to_groups(
    weight: torch.Tensor, group_size: int, pad_value: float = 0.0
) -> tuple[torch.Tensor, GroupLayout]:
    """Reshape a 2-D ``weight`` to (groups, group_width), padding a partial last group."""
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
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


def from_groups(grouped: torch.Tensor, layout: GroupLayout) -> torch.Tensor:
    """Inverse of :func:`to_groups`: drop the padding and restore the 2-D shape."""
    rows, cols = layout.shape
    if layout.pad:
        return grouped.reshape(rows, cols + layout.pad)[:, :cols]
    return grouped.reshape(rows, cols)
