"""Checkpoint IO: atomic output directories, safetensors shards and index, safe loading."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from autoround import io
from autoround.errors import CheckpointError, OutputWriteError
from autoround.io import (
    atomic_dir,
    iter_safetensors_dir,
    load_safetensors_dir,
    save_safetensors_sharded,
)


def _siblings(path: Path) -> list[str]:
    """Every entry beside ``path`` other than ``path`` itself (temp or aside dirs left behind)."""
    return sorted(p.name for p in path.parent.iterdir() if p != path)


def _sample_tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(16, 8, generator=generator),  # 512 bytes
        "a.qweight": torch.randint(-(2**31), 2**31 - 1, (4, 8), dtype=torch.int32, generator=generator),
        "b.weight": torch.randn(32, 8, generator=generator).to(torch.bfloat16),  # 512 bytes
        "b.scales": torch.randn(2, 8, generator=generator).to(torch.float16),
        "norm.weight": torch.ones(8),
    }


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118


def _assert_same(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(loaded) == sorted(expected)
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert torch.equal(loaded[name], tensor), name


# --- atomic_dir ----------------------------------------------------------------------------


def test_atomic_dir_builds_beside_target_and_renames_on_success(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".ckpt.tmp-")
        assert not target.exists(), "target appears only once complete"
        (tmp / "config.json").write_text("{}")
    assert (target / "config.json").read_text() == "{}"
    assert _siblings(target) == []


def test_atomic_dir_result_has_ordinary_permissions(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "x").write_text("x")
    assert (tmp_path / "ckpt").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_exception_leaves_no_target_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(target) as tmp:
        (tmp / "half-written").write_text("x")
        raise RuntimeError("boom")
    assert not target.exists()
    assert _siblings(target) == []


def test_exception_leaves_an_existing_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert (target / "old.txt").read_text() == "old"
    assert _siblings(target) == []


def test_non_empty_target_is_refused_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match=r"ckpt.*--overwrite"), atomic_dir(target):
        pytest.fail("must not be entered")
    assert (target / "old.txt").read_text() == "old"
    assert _siblings(target) == []


def test_existing_empty_dir_is_fine(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_overwrite_replaces_the_old_contents(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target, overwrite=True) as tmp:
        assert (target / "old.txt").exists(), "old contents kept until the new ones are complete"
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert _siblings(target) == []


def test_failed_final_rename_restores_the_old_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace = os.replace

    def replace(src: Path, dst: Path) -> None:
        if Path(src).name.startswith(".ckpt.tmp-"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk full"), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert _siblings(target) == []


def test_target_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.write_text("not a dir")
    with pytest.raises(FileExistsError, match="not a directory"), atomic_dir(target, overwrite=True):
        pytest.fail("must not be entered")


def test_missing_parents_are_created(tmp_path: Path) -> None:
    target = tmp_path / "out" / "deep" / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("x")
    assert (target / "x").exists()


# --- saving --------------------------------------------------------------------------------


def test_everything_that_fits_goes_to_one_file(tmp_path: Path) -> None:
    tensors = _sample_tensors()
    assert save_safetensors_sharded(tensors, tmp_path) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    _assert_same(_read_file(tmp_path / "model.safetensors"), tensors)


def test_small_shards_get_hf_names_and_an_index(tmp_path: Path) -> None:
    tensors = _sample_tensors()
    names = save_safetensors_sharded(tensors, tmp_path, max_shard_bytes=600)
    # greedy in order: [a.weight 512] [a.qweight 128; +b.weight 512 would pass 600] [b.*, norm: 576]
    assert names == [f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, "model.safetensors.index.json"])

    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    expected_total = sum(t.numel() * t.element_size() for t in tensors.values())
    assert index["metadata"] == {"total_size": expected_total}
    assert sorted(index["weight_map"]) == sorted(tensors)
    # every name really is in the file the index names, with its exact bytes
    for name, file_name in index["weight_map"].items():
        stored = _read_file(tmp_path / file_name)[name]
        assert torch.equal(stored, tensors[name]) and stored.dtype == tensors[name].dtype
    for file_name in names:
        size = sum(t.numel() * t.element_size() for t in _read_file(tmp_path / file_name).values())
        assert size <= 600


def test_a_tensor_larger_than_a_shard_gets_its_own(tmp_path: Path) -> None:
    tensors = {"small": torch.zeros(2), "big": torch.zeros(100), "tail": torch.zeros(2)}
    names = save_safetensors_sharded(tensors, tmp_path, max_shard_bytes=16)
    assert len(names) == 3
    assert [list(_read_file(tmp_path / n)) for n in names] == [["small"], ["big"], ["tail"]]


def test_sharded_checkpoint_round_trips_exactly(tmp_path: Path) -> None:
    tensors = _sample_tensors()
    save_safetensors_sharded(tensors, tmp_path, max_shard_bytes=100)
    _assert_same(load_safetensors_dir(tmp_path), tensors)


def test_transformers_loads_our_shards(tmp_path: Path, tiny_llama: torch.nn.Module) -> None:
    state = {k: v for k, v in tiny_llama.state_dict().items() if k != "lm_head.weight"}
    names = save_safetensors_sharded(state, tmp_path, max_shard_bytes=40_000)
    assert len(names) > 2
    tiny_llama.config.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    _assert_same(loaded.state_dict(), tiny_llama.state_dict())


def test_tensors_sharing_storage_are_saved_as_copies(tmp_path: Path) -> None:
    embedding = torch.randn(6, 4)
    tensors = {"embed.weight": embedding, "lm_head.weight": embedding, "first_rows": embedding[:2]}
    save_safetensors_sharded(tensors, tmp_path)
    loaded = load_safetensors_dir(tmp_path)
    _assert_same(loaded, {k: v.clone() for k, v in tensors.items()})
    assert embedding.data_ptr() == tensors["lm_head.weight"].data_ptr(), (
        "the caller's tensors are not modified"
    )


def test_non_contiguous_tensors_are_saved(tmp_path: Path) -> None:
    transposed = torch.arange(12.0).reshape(3, 4).t()
    save_safetensors_sharded({"t": transposed}, tmp_path)
    assert torch.equal(load_safetensors_dir(tmp_path)["t"], transposed)


def test_metadata_defaults_to_format_pt_and_keeps_it(tmp_path: Path) -> None:
    save_safetensors_sharded({"x": torch.zeros(1)}, _mkdir(tmp_path / "default"))
    save_safetensors_sharded(
        {"x": torch.zeros(1)}, _mkdir(tmp_path / "extra"), metadata={"producer": "autoround"}
    )
    with safe_open(str(tmp_path / "default" / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    with safe_open(str(tmp_path / "extra" / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt", "producer": "autoround"}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_bad_shard_size_and_stale_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"max_shard_bytes.*0"):
        save_safetensors_sharded({"x": torch.zeros(1)}, tmp_path, max_shard_bytes=0)
    save_safetensors_sharded({"x": torch.zeros(1)}, tmp_path)
    with pytest.raises(FileExistsError, match=r"model\.safetensors"):
        save_safetensors_sharded({"x": torch.zeros(1)}, tmp_path)


# --- loading -------------------------------------------------------------------------------


def test_iter_yields_name_tensor_pairs_one_at_a_time(tmp_path: Path) -> None:
    tensors = _sample_tensors()
    save_safetensors_sharded(tensors, tmp_path, max_shard_bytes=600)
    pairs = iter_safetensors_dir(tmp_path)
    name, tensor = next(pairs)
    assert torch.equal(tensor, tensors[name])
    _assert_same({name: tensor, **dict(pairs)}, tensors)


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to unpickle fail the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail("a pickle file was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


@pytest.mark.parametrize("file_name", ["pytorch_model.bin", "model.pt"])
@pytest.mark.usefixtures("no_unpickling")
def test_pickle_weights_are_refused(tmp_path: Path, file_name: str) -> None:
    torch.save({"x": torch.zeros(1)}, tmp_path / file_name)
    with pytest.raises(CheckpointError, match=rf"{file_name}.*never loaded"):
        load_safetensors_dir(tmp_path)


@pytest.mark.usefixtures("no_unpickling")
def test_safetensors_win_over_pickle_files_beside_them(tmp_path: Path) -> None:
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    save_safetensors_sharded({"x": torch.ones(2)}, tmp_path)
    assert torch.equal(load_safetensors_dir(tmp_path)["x"], torch.ones(2))


@pytest.mark.parametrize("keep", [0.5, 0.01], ids=["truncated-data", "truncated-header"])
def test_truncated_file_is_a_checkpoint_error_naming_it(tmp_path: Path, keep: float) -> None:
    save_safetensors_sharded({"x": torch.randn(256)}, tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_safetensors_dir(tmp_path)


def test_corrupt_shard_is_named(tmp_path: Path) -> None:
    save_safetensors_sharded(_sample_tensors(), tmp_path, max_shard_bytes=600)
    (tmp_path / "model-00002-of-00003.safetensors").write_bytes(b"\x00" * 7)
    with pytest.raises(CheckpointError, match="model-00002-of-00003"):
        load_safetensors_dir(tmp_path)


def test_missing_shard_is_named(tmp_path: Path) -> None:
    save_safetensors_sharded(_sample_tensors(), tmp_path, max_shard_bytes=600)
    (tmp_path / "model-00003-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00003-of-00003.*missing"):
        load_safetensors_dir(tmp_path)


def test_index_naming_a_tensor_its_shard_lacks_is_refused(tmp_path: Path) -> None:
    save_safetensors_sharded(_sample_tensors(), tmp_path, max_shard_bytes=600)
    index_path = tmp_path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["ghost.weight"] = "model-00001-of-00003.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"ghost\.weight"):
        load_safetensors_dir(tmp_path)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd"])
def test_index_pointing_outside_the_directory_is_refused(tmp_path: Path, shard: str) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": shard}}))
    with pytest.raises(CheckpointError, match="not a file name"):
        load_safetensors_dir(tmp_path)


def test_unreadable_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"index\.json"):
        load_safetensors_dir(tmp_path)


def test_directory_without_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"neither model\.safetensors"):
        load_safetensors_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_safetensors_dir(tmp_path / "nowhere")


def test_load_accepts_str_paths(tmp_path: Path) -> None:
    save_safetensors_sharded({"x": torch.ones(1)}, tmp_path)
    assert list(load_safetensors_dir(os.fspath(tmp_path))) == ["x"]  # type: ignore[arg-type]


# --- a full disk: one error naming the file, nothing partial left ----------------------------


@contextlib.contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """Inside, files this process writes are capped at ``nbytes`` (the soft RLIMIT_FSIZE): a larger
    write fails with EFBIG, as the closest a test gets to a full disk. The cap is lifted on
    leaving, before pytest writes its report (its own output file is larger than the cap)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _big_tensors() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.zeros(64, 64), "b.weight": torch.ones(64, 64)}  # 16 KiB each


def test_a_full_disk_names_the_file_and_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(OutputWriteError) as info, file_size_limit(4096):
        save_safetensors_sharded(_big_tensors(), tmp_path)
    message = str(info.value)
    assert message.startswith(f"could not write {tmp_path / 'model.safetensors'}: ")
    assert "File too large" in message and "free space or choose another --output_dir" in message
    assert "\n" not in message
    assert isinstance(info.value, OSError)
    assert list(tmp_path.iterdir()) == []  # the partial file is removed


def test_a_full_disk_on_a_later_shard_removes_the_earlier_ones(tmp_path: Path, monkeypatch) -> None:
    real_save = io.save_file

    def second_fails(tensors, path, metadata=None):
        if path.name.startswith("model-00002"):
            path.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(io, "save_file", second_fails)
    with pytest.raises(OutputWriteError, match=r"model-00002-of-00002\.safetensors: .*No space left") as info:
        save_safetensors_sharded(_big_tensors(), tmp_path, max_shard_bytes=20_000)
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_writing_the_index_removes_the_shards(tmp_path: Path, monkeypatch) -> None:
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(OutputWriteError, match=r"model\.safetensors\.index\.json"):
        save_safetensors_sharded(_big_tensors(), tmp_path, max_shard_bytes=20_000)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_inside_atomic_dir_leaves_no_target_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with (
        pytest.raises(OutputWriteError, match=f"could not write {target}: .*free space"),
        atomic_dir(target) as tmp,
    ):
        (tmp / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert not target.exists()
    assert _siblings(target) == []


def test_a_full_disk_through_atomic_dir_keeps_the_file_named(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with pytest.raises(OutputWriteError) as info, file_size_limit(4096), atomic_dir(target) as tmp:
        save_safetensors_sharded(_big_tensors(), tmp)
    # named where the user looks for it, not in the temp dir that is gone
    assert str(info.value).startswith(f"could not write {target / 'model.safetensors'}: ")
    assert "File too large" in str(info.value)
    assert not target.exists()
    assert _siblings(target) == []


def test_other_os_errors_inside_atomic_dir_are_not_called_a_full_disk(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with pytest.raises(PermissionError), atomic_dir(target):
        raise PermissionError(errno.EACCES, "Permission denied")
    assert _siblings(target) == []
