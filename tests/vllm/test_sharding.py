"""Tensor-parallel shard arithmetic (vLLM's GPTQ sharding, group-aligned)."""

from __future__ import annotations

import pytest

from autoround.schemes import Scheme
from autoround_vllm.sharding import ShardingError, local_scheme, plan_partition

W4G128 = Scheme(bits=4, group_size=128)


def test_unsharded_partial_last_group():
    plan = plan_partition(W4G128, 576, 576, [576, 192, 192])
    assert plan.qweight == (72, 960) and plan.scales == (5, 960) and plan.qzeros == (5, 120)
    assert not plan.shard_groups


def test_column_parallel_keeps_all_groups():
    plan = plan_partition(W4G128, 576, 576, [288, 96, 96])  # TP=2 q/k/v
    assert plan.scales == (5, 480) and plan.qzeros == (5, 60)


def test_row_parallel_group_aligned():
    plan = plan_partition(W4G128, 1536, 768, [576])  # down_proj, TP=2
    assert plan.qweight == (96, 576) and plan.scales == (6, 576) and plan.shard_groups
    assert local_scheme(W4G128, plan, 1536) == W4G128


def test_row_parallel_split_group_refused():
    with pytest.raises(ShardingError, match=r"slice of 288 of 576 inputs splits a group of 128"):
        plan_partition(W4G128, 576, 288, [576], layer="o_proj")


def test_row_parallel_per_channel_replicates_scales():
    scheme = Scheme(bits=4, group_size=-1)
    plan = plan_partition(scheme, 576, 288, [576])
    assert plan.scales == (1, 576) and not plan.shard_groups
    assert local_scheme(scheme, plan, 576).group_size == -1


def test_three_bit_words():
    scheme = Scheme(bits=3, group_size=64)
    plan = plan_partition(scheme, 576, 576, [576])
    assert plan.qweight == (54, 576) and plan.qzeros == (9, 54)
    with pytest.raises(ShardingError, match="whole int32 words"):
        plan_partition(scheme, 576, 576, [100])


def test_pack_factor_divides_offsets_exactly():
    plan = plan_partition(Scheme(bits=3, group_size=64), 576, 576, [576, 192, 192])
    assert 192 // plan.pack_factor == 18 and 768 // plan.pack_factor == 72
