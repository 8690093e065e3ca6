"""Model-free RTN writes the model-based RTN checkpoint bit for bit, shard by shard, one input
tensor at a time, without building the model; bad input is refused before any work and a failure
leaves nothing behind."""

from __future__ import annotations

import errno
import json
import weakref

import pytest
import torch
from model_free_helpers import assert_same_checkpoint, model_based
from safetensors import safe_open
from tiny_models import TINY_LLAMA, TINY_QWEN3_MOE, build_model
from transformers import LlamaConfig, Qwen3Config, Qwen3MoeConfig

from autoround import load_quantized
from autoround.errors import CheckpointError, FormatError, OutputWriteError, SchemeError, UsageError
from autoround.io import INDEX_FILE, SINGLE_FILE
from autoround.model_free import quantize, quantize_model_free

UNTIED = {**TINY_LLAMA, "tie_word_embeddings": False}
MODELS = {
    "llama": lambda: build_model(LlamaConfig(**TINY_LLAMA)),
    "qwen3-bf16": lambda: build_model(Qwen3Config(**UNTIED), dtype=torch.bfloat16),
}


@pytest.mark.parametrize(
    ("model", "scheme", "overrides"),
    [
        ("llama", "W4A16", {}),
        ("qwen3-bf16", "W2A16G64", {"sym": False}),
        ("llama", "W8A16", {"group_size": 32, "sym": False}),
        ("qwen3-bf16", "W3A16", {"group_size": -1}),
    ],
)
def test_the_checkpoint_equals_the_model_based_one(
    tmp_path, save_checkpoint, forbid_model_building, model, scheme, overrides
) -> None:
    built = MODELS[model]()
    source = save_checkpoint(built)
    reference = model_based(built, tmp_path / "reference", scheme, **overrides)
    forbid_model_building()
    result = quantize_model_free(source, tmp_path / "out", scheme, progress=False, **overrides)
    assert result.path == tmp_path / "out"
    assert_same_checkpoint(reference, result.path)
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= {
        p.name for p in result.path.iterdir()
    }


def test_moe_routers_and_a_quantized_lm_head_as_the_model_based_path_does(
    tmp_path, save_checkpoint, forbid_model_building
) -> None:
    built = build_model(Qwen3MoeConfig(**TINY_QWEN3_MOE))
    source = save_checkpoint(built)  # transformers 5 saves the experts one by one
    layer_config = {"lm_head": "W8A16", "down_proj": {"bits": 8}}
    reference = model_based(built, tmp_path / "reference", layer_config=layer_config)
    forbid_model_building()
    result = quantize_model_free(source, tmp_path / "out", layer_config=layer_config, progress=False)
    assert_same_checkpoint(reference, result.path)
    extra = json.loads((result.path / "config.json").read_text())["quantization_config"]["extra_config"]
    assert extra["model.layers.0.mlp.gate"] == {"bits": 16, "data_type": "fp"}  # the router


def test_ignore_layers_keep_layers_in_16_bits_like_a_16_bit_layer_config(tmp_path, save_checkpoint) -> None:
    built = build_model(LlamaConfig(**TINY_LLAMA))
    source = save_checkpoint(built)
    reference = model_based(built, tmp_path / "reference", layer_config={"model.layers.1.": {"bits": 16}})
    result = quantize_model_free(source, tmp_path / "out", ignore_layers="model.layers.1", progress=False)
    assert_same_checkpoint(reference, result.path)


def test_multi_shard_input_gives_a_multi_shard_output_with_its_index(tmp_path, save_checkpoint) -> None:
    built = build_model(LlamaConfig(**TINY_LLAMA))
    source = save_checkpoint(built, max_shard_size="60KB")
    inputs = json.loads((source / INDEX_FILE).read_text())["weight_map"]
    reference = model_based(built, tmp_path / "reference")
    out = quantize_model_free(source, tmp_path / "out", progress=False).path
    assert_same_checkpoint(reference, out)
    index = json.loads((out / INDEX_FILE).read_text())
    files = sorted({*index["weight_map"].values()})
    assert len(files) >= len(set(inputs.values())) > 1
    assert files == sorted(p.name for p in out.glob("*.safetensors"))
    assert files == [f"model-{i:05d}-of-{len(files):05d}.safetensors" for i in range(1, len(files) + 1)]
    total = 0
    for name in files:
        with safe_open(str(out / name), framework="pt") as handle:
            keys = list(handle.keys())
            total += sum(handle.get_tensor(k).numel() * handle.get_tensor(k).element_size() for k in keys)
        assert sorted(k for k, f in index["weight_map"].items() if f == name) == sorted(keys)
    assert index["metadata"]["total_size"] == total
    assert not (out / SINGLE_FILE).exists()
    assert load_quantized(out) is not None  # the index is enough for the loader


def test_one_input_shard_is_split_by_max_shard_bytes(tmp_path, save_checkpoint) -> None:
    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)))
    out = quantize_model_free(source, tmp_path / "out", max_shard_bytes=60_000, progress=False).path
    files = set(json.loads((out / INDEX_FILE).read_text())["weight_map"].values())
    assert files == {p.name for p in out.glob("*.safetensors")} and len(files) > 2
    header = 8_000  # safetensors' JSON header, generously
    assert all(p.stat().st_size <= 60_000 + header for p in out.glob("*.safetensors"))


def test_one_input_tensor_at_a_time_and_one_output_shard_in_memory(
    tmp_path, save_checkpoint, forbid_model_building, monkeypatch
) -> None:
    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)))
    forbid_model_building()
    limit = 40_000
    quantized_alive: list[list[str]] = []
    read: list[tuple[str, weakref.ref]] = []

    class CountingHandle:
        def __init__(self, handle):
            self.handle = handle

        def get_tensor(self, name):
            quantized_alive.append([n for n, ref in read if n.endswith("proj.weight") and ref() is not None])
            tensor = self.handle.get_tensor(name)
            read.append((name, weakref.ref(tensor)))
            return tensor

    class CountingOpen:
        def __init__(self, *args, **kwargs):
            self.inner = safe_open(*args, **kwargs)

        def __enter__(self):
            return CountingHandle(self.inner.__enter__())

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    pending: list[int] = []
    add = quantize.ShardWriter.add

    def watched_add(self, name, tensor):
        add(self, name, tensor)
        pending.append(self.pending_bytes)

    monkeypatch.setattr(quantize, "safe_open", CountingOpen)
    monkeypatch.setattr(quantize.ShardWriter, "add", watched_add)
    quantize_model_free(source, tmp_path / "out", max_shard_bytes=limit, progress=False)
    assert len(read) == 20 and sum(n.endswith("proj.weight") for n, _ in read) == 14
    assert all(alive == [] for alive in quantized_alive)  # each weight freed before the next read
    largest = 128 * 96 * 4  # the embedding, alone in its shard
    assert max(pending) <= max(limit, largest)


def test_a_hub_id_is_read_through_snapshot_download_from_the_local_cache(
    tmp_path, save_checkpoint, monkeypatch
) -> None:
    from huggingface_hub import constants

    built = build_model(LlamaConfig(**TINY_LLAMA))
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = tmp_path / "hub"
    snapshot = cache / "models--tiny-org--tiny-llama" / "snapshots" / commit
    save_checkpoint(built, name="snapshot").rename(snapshot.parent.mkdir(parents=True) or snapshot)
    (cache / "models--tiny-org--tiny-llama" / "refs").mkdir()
    (cache / "models--tiny-org--tiny-llama" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference = model_based(built, tmp_path / "reference")
    result = quantize_model_free("tiny-org/tiny-llama", tmp_path / "out", progress=False)
    assert_same_checkpoint(reference, result.path)
    with pytest.raises(OSError, match="could not download 'tiny-org/absent'"):
        quantize_model_free("tiny-org/absent", tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"scheme": "W9A16"}, SchemeError, r"unknown scheme 'W9A16'; presets: \["),
        ({"scheme": "GGUF:Q4_K_M"}, SchemeError, r"data_type 'gguf_k'.*integer schemes only"),
        ({"scheme": "W5A16"}, SchemeError, r"bits=5: model-free RTN writes bits \[2, 3, 4, 8\]"),
        ({"layer_config": {"lm_head": "GGUF:Q4_K"}}, SchemeError, r"layer_config\['lm_head'\].*'gguf"),
        ({"format": "auto_gptq"}, FormatError, r"format 'auto_gptq': model-free RTN writes only"),
        ({"format": "auto_round,auto_gptq"}, FormatError, r"'auto_round,auto_gptq'.*only 'auto_round'"),
        ({"bits": 16}, SchemeError, "quantizes no layer"),
    ],
)
def test_bad_requests_are_refused_before_any_work(tmp_path, save_checkpoint, kwargs, error, message) -> None:
    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)))
    with pytest.raises(error, match=message):
        quantize_model_free(source, tmp_path / "out", progress=False, **kwargs)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def test_sources_without_safetensors_or_already_quantized_are_refused(tmp_path, save_checkpoint) -> None:
    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((source / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match=r"only pickle weight files \['pytorch_model.bin'\]"):
        quantize_model_free(pickled, tmp_path / "out", progress=False)
    (pickled / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match=r"has neither model\.safetensors nor"):
        quantize_model_free(pickled, tmp_path / "out", progress=False)
    quantized = quantize_model_free(source, tmp_path / "quantized", progress=False).path
    with pytest.raises(CheckpointError, match="is a quantized checkpoint"):
        quantize_model_free(quantized, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_the_output_is_refused_inside_the_model_or_when_not_empty(tmp_path, save_checkpoint) -> None:
    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)))
    with pytest.raises(UsageError, match="lies inside the model"):
        quantize_model_free(source, source / "quantized", progress=False)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="exists and is not empty; pass overwrite=True"):
        quantize_model_free(source, taken, progress=False)
    assert (taken / "keep.txt").read_text() == "mine"
    quantize_model_free(source, taken, overwrite=True, progress=False)
    assert not (taken / "keep.txt").exists() and (taken / SINGLE_FILE).is_file()


def test_a_failure_half_way_leaves_nothing_at_the_output(tmp_path, save_checkpoint, monkeypatch) -> None:
    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)), max_shard_size="60KB")
    previous = quantize_model_free(source, tmp_path / "previous", "W8A16", progress=False).path
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    calls = []
    real = quantize.quantize_weight

    def failing(weight, scheme):
        calls.append(1)
        if len(calls) == 8:
            raise RuntimeError("killed half-way")
        return real(weight, scheme)

    monkeypatch.setattr(quantize, "quantize_weight", failing)
    for output, overwrite in ((tmp_path / "out", False), (previous, True)):
        calls.clear()
        with pytest.raises(RuntimeError, match="killed half-way"):
            quantize_model_free(source, output, overwrite=overwrite, progress=False)
    assert not (tmp_path / "out").exists()
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous", "src"]


def test_a_full_disk_names_the_output_and_leaves_nothing(tmp_path, save_checkpoint, monkeypatch) -> None:
    from autoround import io

    def no_space(tensors, path, metadata=None):
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)))
    monkeypatch.setattr(io, "save_file", no_space)
    with pytest.raises(OutputWriteError, match=f"could not write {tmp_path / 'out'}.*No space left"):
        quantize_model_free(source, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
