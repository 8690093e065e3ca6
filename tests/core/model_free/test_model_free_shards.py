"""Output shards written as they fill, then named and indexed as the model-based writer does."""

from __future__ import annotations

import json

import pytest
import torch

from autoround.io import INDEX_FILE, SINGLE_FILE, load_safetensors_dir
from autoround.model_free.shards import ShardWriter


def test_one_shard_is_model_safetensors_without_an_index(tmp_path) -> None:
    writer = ShardWriter(tmp_path, max_shard_bytes=1000)
    writer.add("a", torch.ones(4))
    writer.end_shard()
    writer.end_shard()  # nothing queued: no empty file
    assert writer.finish() == [SINGLE_FILE]
    assert sorted(p.name for p in tmp_path.iterdir()) == [SINGLE_FILE]
    assert torch.equal(load_safetensors_dir(tmp_path)["a"], torch.ones(4))


def test_shards_fill_up_to_the_limit_and_end_when_told(tmp_path) -> None:
    writer = ShardWriter(tmp_path, max_shard_bytes=64)
    for name in "abc":  # 40 bytes each: one per shard
        writer.add(name, torch.zeros(10))
        assert writer.pending_bytes <= 64
    writer.add("d", torch.zeros(2))  # 8 more bytes fit beside c
    writer.end_shard()
    writer.add("e", torch.zeros(100))  # larger than the limit: a shard of its own
    names = writer.finish()
    assert names == [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert index["weight_map"] == {"a": names[0], "b": names[1], "c": names[2], "d": names[2], "e": names[3]}
    assert index["metadata"]["total_size"] == (30 + 2 + 100) * 4
    assert sorted(load_safetensors_dir(tmp_path)) == ["a", "b", "c", "d", "e"]
    assert not list(tmp_path.glob(".part-*"))


def test_a_name_written_twice_or_a_bad_limit_is_an_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="max_shard_bytes must be a positive number of bytes, got 0"):
        ShardWriter(tmp_path, 0)
    writer = ShardWriter(tmp_path, 100)
    writer.add("a", torch.ones(1))
    with pytest.raises(ValueError, match="tensor a was written twice"):
        writer.add("a", torch.ones(1))
