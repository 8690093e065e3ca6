"""Tensor-parallel shard arithmetic for GPTQ-layout weights, the way vLLM shards GPTQ.

A column-parallel layer splits its outputs: every rank holds all input rows of its output
columns, so ``qweight``, ``qzeros`` and ``scales`` are cut along the output dimension and
``qzeros`` (packed along outputs) needs each part's width to fill whole int32 words. A
row-parallel layer splits its inputs: ``qweight`` is cut along its packed input rows and, when
each rank's slice is a whole number of groups, ``scales``/``qzeros`` along their group rows; a
layer with one group per row (per-channel, or a group at least as wide as the row) keeps its
scales whole on every rank. A slice that splits a group, or a packed word, cannot be sharded:
:class:`ShardingError` says so with the numbers. Pure arithmetic, tested without an engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from autoround import group_width
from autoround.errors import UnsupportedLayerError
from autoround.schemes import Scheme


class ShardingError(UnsupportedLayerError):
    """A layer's packed tensors cannot be split over the ranks as asked."""


@dataclass(frozen=True)
class PartitionPlan:
    """One rank's tensor shapes and how the group rows are split.

    Attributes:
        in_features / out_features: this rank's slice of the dense layer.
        qweight / qzeros / scales: shapes of this rank's tensors.
        shard_groups: True when group rows are cut over the ranks (row-parallel with groups);
            False when every rank holds all of them (column-parallel, or one group per row).
        pack_factor: values per int32 word, as vLLM's loaders divide offsets by it.
    """

    in_features: int
    out_features: int
    qweight: tuple[int, int]
    qzeros: tuple[int, int]
    scales: tuple[int, int]
    shard_groups: bool
    pack_factor: Fraction


def values_per_word(bits: int) -> Fraction:
    """Packed values per int32 word (32/3 for 3-bit codes, which straddle words)."""
    return Fraction(32, bits)


def _check_packable(width: int, bits: int, what: str, layer: str) -> None:
    if (width * bits) % 32:
        unit = 32 if bits == 3 else 32 // bits
        raise ShardingError(
            f"{layer}: {what} of {width} {bits}-bit values does not fill whole int32 words "
            f"(it must be a multiple of {unit})"
        )


def plan_partition(
    scheme: Scheme,
    input_size: int,
    input_size_per_partition: int,
    output_partition_sizes: Sequence[int],
    layer: str = "layer",
) -> PartitionPlan:
    """This rank's shapes for a layer of ``input_size`` inputs, as the engine partitions it.

    ``output_partition_sizes`` are this rank's output widths of each fused part (one entry for
    an unfused layer). Raises :class:`ShardingError` for a slice that splits a group or an
    int32 word, naming the layer, the sizes and what would work.
    """
    bits = scheme.bits
    out_features = sum(output_partition_sizes)
    for i, width in enumerate(output_partition_sizes):
        _check_packable(width, bits, f"output part {i}", layer)
    _check_packable(input_size_per_partition, bits, "the input slice", layer)
    full_width = group_width(scheme, input_size)
    row_parallel = input_size_per_partition != input_size
    one_group_per_row = full_width >= input_size
    if row_parallel and not one_group_per_row:
        if input_size_per_partition % full_width:
            raise ShardingError(
                f"{layer}: a row-parallel slice of {input_size_per_partition} of {input_size} inputs "
                f"splits a group of {full_width} (group_size={scheme.group_size}); use a tensor-parallel "
                f"size whose input slice is a multiple of {full_width}, or a smaller group size"
            )
        groups = input_size_per_partition // full_width
        shard_groups = True
    else:
        groups = scheme.num_groups(input_size)
        shard_groups = False
    return PartitionPlan(
        in_features=input_size_per_partition,
        out_features=out_features,
        qweight=(input_size_per_partition * bits // 32, out_features),
        qzeros=(groups, out_features * bits // 32),
        scales=(groups, out_features),
        shard_groups=shard_groups,
        pack_factor=values_per_word(bits),
    )


def local_scheme(scheme: Scheme, plan: PartitionPlan, input_size: int) -> Scheme:
    """The scheme a rank's slice computes with: a per-row group spanning the full input stays per-row."""
    if plan.in_features == input_size or plan.shard_groups:
        return scheme
    return scheme.replace(group_size=-1)
