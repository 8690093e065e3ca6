"""The source side: safetensors headers read without tensors, the files copied beside the output."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from autoround.errors import CheckpointError
from autoround.model_free.source import copy_metadata, read_shards


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
