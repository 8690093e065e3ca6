"""The source side: safetensors headers read without tensors, the files copied beside the output."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from autoround.errors import CheckpointError
from autoround.model_free.source import ShardReader, copy_metadata, read_shards


def test_headers_give_names_shapes_and_dtypes_in_file_order(tmp_path) -> None:
    tensors = {"b.weight": torch.zeros(2, 3, dtype=torch.bfloat16), "a.bias": torch.zeros(3)}
    save_file(tensors, tmp_path / "model.safetensors")
    (shard,) = read_shards(tmp_path)
    assert [(t.name, t.shape, t.dtype, t.is_float) for t in shard.tensors] == [
        ("a.bias", (3,), "F32", True),
        ("b.weight", (2, 3), "BF16", True),
    ]


def test_a_tensor_in_two_shards_or_a_corrupt_file_is_refused(tmp_path) -> None:
    for name in ("model-1.safetensors", "model-2.safetensors"):
        save_file({"x": torch.zeros(1)}, tmp_path / name)
    (tmp_path / "model.safetensors.index.json").write_text(
        '{"weight_map": {"x": "model-1.safetensors", "y": "model-2.safetensors"}}'
    )
    with pytest.raises(CheckpointError, match="tensor x is in both"):
        read_shards(tmp_path)
    (tmp_path / "model-2.safetensors").write_bytes(b"\x10\x00")
    with pytest.raises(CheckpointError, match=r"model-2\.safetensors is not a readable safetensors file"):
        read_shards(tmp_path)


def test_tokenizer_and_generation_files_are_copied_weights_and_configs_are_not(tmp_path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir()
    target.mkdir()
    kept = ["chat_template.jinja", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    kept += ["LICENSE"]
    left = ["config.json", "quantization_config.json", "README.md", "model.safetensors", "pytorch_model.bin"]
    left += ["model.safetensors.index.json", ".gitattributes"]
    for name in kept + left:
        (source / name).write_text(name)
    (source / "subdir").mkdir()
    assert copy_metadata(source, target) == sorted(kept)
    assert sorted(p.name for p in target.iterdir()) == sorted(kept)
    assert (target / "tokenizer.json").read_text() == "tokenizer.json"


def _two_shards(directory, weight_map: dict[str, str]) -> None:
    save_file({"a": torch.zeros(1), "b": torch.zeros(1)}, directory / "model-1.safetensors")
    save_file({"c": torch.zeros(1)}, directory / "model-2.safetensors")
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def test_an_index_that_disagrees_with_its_files_is_refused_naming_file_and_tensor(tmp_path) -> None:
    right = {"a": "model-1.safetensors", "b": "model-1.safetensors", "c": "model-2.safetensors"}
    _two_shards(tmp_path, right)
    assert [len(s.tensors) for s in read_shards(tmp_path)] == [2, 1]
    _two_shards(tmp_path, {"a": "model-1.safetensors", "c": "model-2.safetensors"})
    with pytest.raises(
        CheckpointError,
        match=r"model-1\.safetensors holds tensor b, which model\.safetensors\.index\.json does not list",
    ):
        read_shards(tmp_path)
    _two_shards(tmp_path, {**right, "d": "model-2.safetensors", "e": "model-2.safetensors"})
    with pytest.raises(
        CheckpointError, match=r"maps tensors d, e to model-2\.safetensors, which does not hold them"
    ):
        read_shards(tmp_path)
    _two_shards(tmp_path, {**right, "z": "model-3.safetensors"})
    with pytest.raises(
        CheckpointError, match=r"maps tensor z to model-3\.safetensors, which is missing from"
    ):
        read_shards(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not a readable index with a 'weight_map'"):
        read_shards(tmp_path)


def test_a_truncated_shard_is_refused_from_its_header(tmp_path) -> None:
    save_file({"a": torch.zeros(100), "b": torch.ones(100)}, tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-7])
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors is not a readable safetensors file .*truncated"
    ):
        read_shards(tmp_path)


def test_no_safetensors_at_all_is_refused(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        CheckpointError, match=r"has neither model\.safetensors nor model\.safetensors\.index\.json"
    ):
        read_shards(tmp_path)


def test_the_reader_gives_what_safe_open_gives_in_memory_of_its_own(tmp_path) -> None:
    tensors = {
        "w": torch.randn(6, 4).to(torch.bfloat16),
        "h": torch.randn(3).to(torch.float16),
        "f": torch.randn(2, 2, 2),
        "i": torch.arange(5, dtype=torch.int64),
        "q": torch.tensor([1, -2], dtype=torch.int8),
        "m": torch.tensor([True, False]),
        "e": torch.zeros(0, 3),
        "s": torch.tensor(3.5),
    }
    save_file(tensors, tmp_path / "model.safetensors")
    with ShardReader(tmp_path / "model.safetensors") as reader:
        assert sorted(reader.keys()) == sorted(tensors)
        got = {name: reader.get_tensor(name) for name in tensors}
    for name, tensor in tensors.items():
        assert got[name].dtype == tensor.dtype and got[name].shape == tensor.shape
        assert torch.equal(got[name], tensor)
    (tmp_path / "model.safetensors").write_bytes(b"")  # the tensors are not views of the file
    assert torch.equal(got["w"], tensors["w"])


def test_the_reader_names_the_tensor_a_truncated_file_lacks(tmp_path) -> None:
    save_file({"a": torch.zeros(100), "b": torch.ones(100)}, tmp_path / "model.safetensors")
    with ShardReader(tmp_path / "model.safetensors") as reader:
        path = tmp_path / "model.safetensors"
        path.write_bytes(path.read_bytes()[:-7])  # after the header was read
        assert torch.equal(reader.get_tensor("a"), torch.zeros(100))
        with pytest.raises(
            CheckpointError, match=r"could not read tensor b from .*model\.safetensors \(truncated"
        ):
            reader.get_tensor("b")
    (tmp_path / "bad.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match=r"bad\.safetensors has no readable safetensors header"):
        ShardReader(tmp_path / "bad.safetensors")


def test_the_reader_reads_into_a_buffer_it_is_given(tmp_path) -> None:
    tensors = {"a": torch.randn(4, 8).to(torch.bfloat16), "b": torch.arange(6, dtype=torch.int32)}
    save_file(tensors, tmp_path / "model.safetensors")
    buffer = torch.zeros(100, dtype=torch.uint8)
    with ShardReader(tmp_path / "model.safetensors") as reader:
        assert reader.nbytes("a") == 64
        a = reader.get_tensor("a", into=buffer)
        assert torch.equal(a, tensors["a"]) and a.untyped_storage().data_ptr() == buffer.data_ptr()
        assert torch.equal(reader.get_tensor("b", into=buffer), tensors["b"])  # the same bytes, reused
        with pytest.raises(
            ValueError, match="a buffer for a must be a 1-D uint8 tensor of at least 64 bytes"
        ):
            reader.get_tensor("a", into=torch.zeros(10, dtype=torch.uint8))
        assert [b.shape for b in reader.get_row_blocks("a", 40)] == [(2, 8), (2, 8)]  # 16 bytes a row
        assert torch.equal(torch.cat(list(reader.get_row_blocks("a", 1))), tensors["a"])  # a row at least
