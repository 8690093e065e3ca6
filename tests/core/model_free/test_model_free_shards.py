"""Output shards written as they fill, then named and indexed as the model-based writer does."""

from __future__ import annotations

import json

import pytest
import torch

from autoround.io import INDEX_FILE, SINGLE_FILE, load_safetensors_dir
from autoround.model_free.shards import ShardWriter, header_bytes_for


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


def _data_start_and_offsets(path) -> tuple[int, dict[str, list[int]]]:
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    header.pop("__metadata__")
    return 8 + size, {name: entry["data_offsets"] for name, entry in header.items()}


def test_tensors_go_to_disk_as_added_and_only_odd_sized_ones_wait(tmp_path) -> None:
    tensors = {
        "w": torch.arange(64, dtype=torch.int32).reshape(8, 8),
        "odd_half": torch.arange(5, dtype=torch.float16),  # 10 bytes: waits, ends the file
        "odd_byte": torch.tensor([True, False, True]),  # 3 bytes: waits, written last
        "odd_word": torch.arange(3, dtype=torch.float32),  # 12 bytes: waits, first of those
        "b": torch.ones(4, 2, dtype=torch.bfloat16),
    }
    with ShardWriter(tmp_path, max_shard_bytes=10_000) as writer:
        waiting = 0
        for name, tensor in tensors.items():
            writer.add(name, tensor)
            waiting += tensor.numel() * tensor.element_size() if name.startswith("odd") else 0
            assert writer.pending_bytes == waiting  # the 8-byte multiples are on disk already
        assert waiting == 10 + 3 + 12
        assert writer.finish() == [SINGLE_FILE]
    loaded = load_safetensors_dir(tmp_path)
    assert sorted(loaded) == sorted(tensors)
    assert all(loaded[n].dtype == t.dtype and torch.equal(loaded[n], t) for n, t in tensors.items())
    start, offsets = _data_start_and_offsets(tmp_path / SINGLE_FILE)
    assert start % 8 == 0
    order = sorted(offsets, key=lambda n: offsets[n][0])
    assert order == ["w", "b", "odd_word", "odd_half", "odd_byte"]  # arrival, then by element size
    assert all(offsets[n][0] % tensors[n].element_size() == 0 for n in tensors)


def test_a_header_larger_than_its_room_is_written_with_the_data_copied(tmp_path) -> None:
    names = [f"model.layers.{i}.a_rather_long_tensor_name.weight" for i in range(40)]
    with ShardWriter(tmp_path, max_shard_bytes=10_000, header_reserve=64) as writer:
        for i, name in enumerate(names):
            writer.add(name, torch.full((2,), float(i)))
        writer.finish()
    loaded = load_safetensors_dir(tmp_path)
    assert [float(loaded[n][0]) for n in names] == [float(i) for i in range(40)]
    assert not [p.name for p in tmp_path.iterdir() if p.name != SINGLE_FILE]


def test_the_reserved_header_room_is_padded_with_spaces(tmp_path) -> None:
    with ShardWriter(tmp_path, max_shard_bytes=10_000, header_reserve=header_bytes_for(["a"])) as writer:
        writer.add("a", torch.ones(2))
        writer.finish()
    raw = (tmp_path / SINGLE_FILE).read_bytes()
    size = int.from_bytes(raw[:8], "little")
    assert size == header_bytes_for(["a"]) + (-header_bytes_for(["a"]) % 8)
    assert raw[8 : 8 + size].rstrip(b" ").endswith(b"}") and raw[8 + size - 1 : 8 + size] == b" "
    assert torch.equal(load_safetensors_dir(tmp_path)["a"], torch.ones(2))


def test_an_error_closes_the_open_file_and_writes_no_header(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="stop"), ShardWriter(tmp_path, max_shard_bytes=10_000) as writer:
        writer.add("a", torch.ones(2))
        raise RuntimeError("stop")
    assert writer._open is None
    (part,) = tmp_path.iterdir()
    assert part.name.startswith(".part-") and part.read_bytes()[:8] == bytes(8)  # never made complete


def test_a_tensor_written_in_blocks_is_the_tensor(tmp_path) -> None:
    big = torch.arange(40, dtype=torch.float32).reshape(10, 4)
    odd = torch.arange(15, dtype=torch.float16).reshape(5, 3)  # 30 bytes: waits for the end
    with ShardWriter(tmp_path, max_shard_bytes=10_000) as writer:
        writer.add("first", torch.ones(2, dtype=torch.bfloat16))  # 4 bytes: waits too
        writer.add_blocks("big", torch.float32, (10, 4), big.split(3))
        writer.add_blocks("odd", torch.float16, (5, 3), odd.split(2))
        assert writer.shard_bytes == 4 + 160 + 30
        with pytest.raises(
            ValueError, match=r"blocks of 32 bytes for a tensor of shape \(3, 4\) \(48 bytes\)"
        ):
            writer.add_blocks("short", torch.float32, (3, 4), [torch.zeros(2, 4)])
        with pytest.raises(ValueError, match=r"a block of dtype torch\.float16 in a torch\.float32 tensor"):
            writer.add_blocks("mixed", torch.float32, (2, 4), [torch.zeros(2, 4, dtype=torch.float16)])
    (tmp_path / ".part-00000.safetensors").unlink()
    with ShardWriter(tmp_path, max_shard_bytes=10_000) as writer:
        writer.add("first", torch.ones(2, dtype=torch.bfloat16))
        writer.add_blocks("big", torch.float32, (10, 4), big.split(3))
        writer.add_blocks("odd", torch.float16, (5, 3), odd.split(2))
        writer.finish()
    loaded = load_safetensors_dir(tmp_path)
    assert torch.equal(loaded["big"], big) and torch.equal(loaded["odd"], odd)
    assert torch.equal(loaded["first"], torch.ones(2, dtype=torch.bfloat16))
    _, offsets = _data_start_and_offsets(tmp_path / SINGLE_FILE)
    assert sorted(offsets, key=lambda n: offsets[n][0]) == ["big", "first", "odd"]  # waiting ones by arrival
