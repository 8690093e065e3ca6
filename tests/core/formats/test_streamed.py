"""The streamed checkpoint writer (``low_cpu_mem_usage``) writes the files
``save_safetensors_sharded`` writes from the same tensors, byte for byte, one file or sharded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autoround.formats.streamed import PartSpill, write_sharded
from autoround.io import save_safetensors_sharded


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    return {
        "model.embed_tokens.weight": base,
        "model.norm.weight": torch.randn(5, generator=g).to(torch.bfloat16),
        "lm_head.weight": base,  # shared storage: written as its own copy
        "model.layers.0.mlp.qweight": torch.randint(
            -(2**31), 2**31 - 1, (3, 8), dtype=torch.int32, generator=g
        ),
        "model.layers.0.mlp.scales": torch.randn(2, 8, generator=g).half(),
        "model.layers.0.mlp.empty": torch.zeros(0, 4, dtype=torch.float16),
        "a.first.by.name": torch.arange(7, dtype=torch.int64),
        "z.flag": torch.tensor([True, False]),
    }


@pytest.mark.parametrize("max_shard_bytes", [1 << 30, 100, 1], ids=["one-file", "shards", "one-per-file"])
def test_streamed_files_are_save_safetensors_sharded_files(tmp_path: Path, max_shard_bytes: int) -> None:
    tensors = _tensors()
    (tmp_path / "normal").mkdir()
    (tmp_path / "streamed").mkdir()
    expected = save_safetensors_sharded(tensors, tmp_path / "normal", max_shard_bytes=max_shard_bytes)
    spill = PartSpill(tmp_path / "streamed" / ".parts")
    names = list(tensors)
    spill.add({k: tensors[k] for k in names[:3]})  # parts in another grouping than the files'
    spill.add({k: tensors[k] for k in names[3:]})
    spill.add({})
    written = write_sharded({k: spill.tensors[k] for k in names}, tmp_path / "streamed", max_shard_bytes)
    spill.close()
    assert written == expected
    assert sorted(p.name for p in (tmp_path / "streamed").iterdir()) == sorted(
        p.name for p in (tmp_path / "normal").iterdir()
    )
    for path in (tmp_path / "normal").iterdir():
        assert (tmp_path / "streamed" / path.name).read_bytes() == path.read_bytes(), path.name


def test_it_refuses_a_directory_with_weight_files(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    spill = PartSpill(tmp_path / ".parts")
    spill.add({"x": torch.zeros(2)})
    with pytest.raises(FileExistsError, match="already holds weight files"):
        write_sharded(spill.tensors, tmp_path, 1 << 30)
    spill.close()
    assert not (tmp_path / ".parts").exists()
