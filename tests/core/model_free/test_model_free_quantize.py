"""Model-free RTN writes the model-based RTN checkpoint bit for bit, shard by shard, one input
tensor at a time, without building the model; bad input is refused before any work and a failure
leaves nothing behind."""

from __future__ import annotations

import errno
import json
import re
import threading
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
from autoround.model_free import quantize, quantize_model_free, rounding, space
from autoround.model_free.source import ShardReader
from autoround.packing import pack_int32

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


@pytest.mark.parametrize(
    ("model", "scheme", "overrides"),
    [
        ("llama", "W4A16", {}),
        ("qwen3-bf16", "W2A16G64", {"sym": False}),
        ("llama", "W8A16", {"group_size": 32, "sym": False}),
        ("qwen3-bf16", "W3A16", {"group_size": -1}),
    ],
)
def test_weights_quantized_in_blocks_of_32_rows_give_the_same_checkpoint(
    tmp_path, save_checkpoint, monkeypatch, model, scheme, overrides
) -> None:
    built = MODELS[model]()
    source = save_checkpoint(built)
    reference = model_based(built, tmp_path / "reference", scheme, **overrides)
    monkeypatch.setattr(rounding, "CHUNK_ELEMENTS", 1)  # 32 rows at a time: 3 blocks of 96, 5 of 160
    rows: list[int] = []
    real = quantize.quantize_rows

    def counting(weight, chosen, zero_offset):
        rows.append(weight.shape[0])
        return real(weight, chosen, zero_offset)

    monkeypatch.setattr(quantize, "quantize_rows", counting)
    result = quantize_model_free(source, tmp_path / "out", scheme, progress=False, **overrides)
    assert set(rows) == {32} and len(rows) == 2 * (3 + 1 + 1 + 3 + 5 + 5 + 3)  # q k v o gate up down
    assert_same_checkpoint(reference, result.path)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_packing_along_the_inputs_gives_pack_int32s_words(bits) -> None:
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (64, 96), generator=gen, dtype=torch.uint8)
    codes[0] = 2**bits - 1  # every field set: words with the sign bit
    assert torch.equal(
        rounding.pack_along_inputs(codes, bits), pack_int32(codes.t().contiguous(), bits, dim=0)
    )


def test_row_blocks_rounded_on_threads_give_the_same_checkpoint_and_restore_torchs_threads(
    tmp_path, save_checkpoint, monkeypatch
) -> None:
    built = MODELS["qwen3-bf16"]()
    source = save_checkpoint(built)
    reference = model_based(built, tmp_path / "reference", "W4A16", group_size=32)
    monkeypatch.setattr(rounding, "CHUNK_ELEMENTS", 1)
    seen: list[tuple[str, int]] = []
    real = quantize.quantize_rows

    def recording(weight, chosen, zero_offset):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return real(weight, chosen, zero_offset)

    monkeypatch.setattr(quantize, "quantize_rows", recording)
    torch.set_num_threads(2)  # the one_thread fixture restores its own count afterwards
    result = quantize_model_free(source, tmp_path / "out", "W4A16", group_size=32, progress=False)
    assert_same_checkpoint(reference, result.path)
    on_pool = {name.startswith("model-free-rtn_") for name, _ in seen}
    assert on_pool == {True, False}  # several blocks: on the pool's threads; one block: inline
    assert {threads for _, threads in seen} == {1} and torch.get_num_threads() == 2
    monkeypatch.setattr(quantize, "quantize_rows", lambda *args: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError, match="stop"):
        quantize_model_free(source, tmp_path / "out2", progress=False)
    assert torch.get_num_threads() == 2 and not (tmp_path / "out2").exists()


def test_large_tensors_kept_as_they_are_are_copied_in_row_blocks(
    tmp_path, save_checkpoint, monkeypatch
) -> None:
    built = build_model(LlamaConfig(**UNTIED), dtype=torch.bfloat16)
    source = save_checkpoint(built)
    reference = model_based(built, tmp_path / "reference")
    monkeypatch.setattr(quantize, "STREAM_BLOCK_BYTES", 1000)  # the embedding and lm_head: 5 rows a block
    blocks: dict[str, list[int]] = {}
    real = ShardReader.get_row_blocks

    def counting(self, name, max_bytes):
        for block in real(self, name, max_bytes):
            blocks.setdefault(name, []).append(block.shape[0])
            yield block

    monkeypatch.setattr(ShardReader, "get_row_blocks", counting)
    result = quantize_model_free(source, tmp_path / "out", progress=False)
    assert blocks == {name: [5] * 25 + [3] for name in ("lm_head.weight", "model.embed_tokens.weight")}
    assert_same_checkpoint(reference, result.path)


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

        def get_tensor(self, name, **kwargs):
            quantized_alive.append([n for n, ref in read if n.endswith("proj.weight") and ref() is not None])
            tensor = self.handle.get_tensor(name, **kwargs)
            read.append((name, weakref.ref(tensor)))
            return tensor

        def __getattr__(self, name):
            return getattr(self.handle, name)

    class CountingOpen:
        def __init__(self, *args, **kwargs):
            self.inner = ShardReader(*args, **kwargs)

        def __enter__(self):
            return CountingHandle(self.inner.__enter__())

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    pending: list[int] = []
    add = quantize.ShardWriter.add

    def watched_add(self, name, tensor):
        add(self, name, tensor)
        pending.append(self.pending_bytes)

    monkeypatch.setattr(quantize, "ShardReader", CountingOpen)
    monkeypatch.setattr(quantize.ShardWriter, "add", watched_add)
    quantize_model_free(source, tmp_path / "out", max_shard_bytes=limit, progress=False)
    assert len(read) == 20 and sum(n.endswith("proj.weight") for n, _ in read) == 14
    assert all(len(alive) <= 1 for alive in quantized_alive)  # read ahead: the one being rounded, no older
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
    real = quantize.quantize_rows

    def failing(weight, scheme, zero_offset):
        calls.append(1)
        if len(calls) == 8:
            raise RuntimeError("killed half-way")
        return real(weight, scheme, zero_offset)

    monkeypatch.setattr(quantize, "quantize_rows", failing)
    for output, overwrite in ((tmp_path / "out", False), (previous, True)):
        calls.clear()
        with pytest.raises(RuntimeError, match="killed half-way"):
            quantize_model_free(source, output, overwrite=overwrite, progress=False)
    assert not (tmp_path / "out").exists()
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous", "src"]


def _nothing_written(tmp_path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_truncated_shard_is_refused_naming_it_and_nothing_is_written(tmp_path, save_checkpoint) -> None:
    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)), max_shard_size="60KB")
    shard = sorted(source.glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=f"{shard} is not a readable safetensors file.*truncated"):
        quantize_model_free(source, tmp_path / "out", progress=False)
    _nothing_written(tmp_path)


def test_a_shard_truncated_after_its_header_was_read_is_refused(
    tmp_path, save_checkpoint, monkeypatch
) -> None:
    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)), max_shard_size="60KB")
    shard = sorted(source.glob("model-*.safetensors"))[-1]
    real = quantize.check_dense_checkpoint  # the last look at the headers before the shards are read

    def then_truncated(directory):
        real(directory)
        shard.write_bytes(shard.read_bytes()[:-100])

    monkeypatch.setattr(quantize, "check_dense_checkpoint", then_truncated)
    with pytest.raises(
        CheckpointError,
        match=f"could not read tensor .* from {shard} \\(truncated or changed while being read",
    ):
        quantize_model_free(source, tmp_path / "out", progress=False)
    _nothing_written(tmp_path)


def _index(source):
    return json.loads((source / INDEX_FILE).read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (  # a tensor of a shard that the index does not list (the shard holds others it lists)
            lambda weight_map: weight_map.pop("model.layers.1.self_attn.k_proj.weight"),
            r"model-\d+-of-\d+\.safetensors holds tensor model\.layers\.1\.self_attn\.k_proj\.weight, "
            r"which model\.safetensors\.index\.json does not list",
        ),
        (  # an index entry pointing to a file that lacks the tensor
            lambda weight_map: weight_map.update(
                {"model.layers.9.mlp.up_proj.weight": weight_map["lm_head.weight"]}
            ),
            r"maps tensor model\.layers\.9\.mlp\.up_proj\.weight to model-\d+-of-\d+\.safetensors, "
            r"which does not hold it",
        ),
        (  # an index entry pointing to a missing file
            lambda weight_map: weight_map.update({"model.norm.weight": "model-00009-of-00009.safetensors"}),
            r"maps tensor model\.norm\.weight to model-00009-of-00009\.safetensors, which is missing from",
        ),
    ],
    ids=["tensor-not-in-index", "index-entry-without-tensor", "index-entry-without-file"],
)
def test_an_index_that_disagrees_with_the_shards_is_refused_and_nothing_is_written(
    tmp_path, save_checkpoint, edit, message
) -> None:
    source = save_checkpoint(build_model(LlamaConfig(**UNTIED)), max_shard_size="60KB")
    index = _index(source)
    edit(index["weight_map"])
    (source / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=message):
        quantize_model_free(source, tmp_path / "out", progress=False)
    _nothing_written(tmp_path)


def test_too_little_free_space_is_refused_before_any_work_saying_how_much_is_needed(
    tmp_path, save_checkpoint, monkeypatch
) -> None:
    import shutil

    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)), max_shard_size="60KB")
    probe = quantize_model_free(source, tmp_path / "probe", progress=False).path
    written = sum(p.stat().st_size for p in probe.iterdir())
    shutil.rmtree(probe)
    real = shutil.disk_usage
    free = {"bytes": 10_000}
    monkeypatch.setattr(space.shutil, "disk_usage", lambda path: real(path)._replace(free=free["bytes"]))
    with pytest.raises(
        OutputWriteError, match=r"not enough space for .*out: the checkpoint needs about ([\d.]+) MiB"
    ) as info:
        quantize_model_free(source, tmp_path / "out", progress=False)
    assert info.value.errno == errno.ENOSPC and "free space or choose another --output_dir" in str(info.value)
    needed = float(re.search(r"needs about ([\d.]+) MiB", str(info.value)).group(1)) * 2**20
    assert written <= needed <= written + space.METADATA_SLACK + 2**20  # the estimate covers what is written
    _nothing_written(tmp_path)
    free["bytes"] = int(needed + 0.1 * 2**20)  # the message rounds to 0.1 MiB
    quantize_model_free(source, tmp_path / "out", progress=False)


def test_a_full_disk_names_the_output_and_leaves_nothing(tmp_path, save_checkpoint, monkeypatch) -> None:
    from autoround.model_free import shards

    class FillingFile:
        def __init__(self, path, mode):
            self.inner = open(path, mode)  # noqa: SIM115
            self.left = 30_000

        def write(self, data):
            if len(data) > self.left:
                self.inner.write(bytes(data)[: self.left])
                raise OSError(errno.ENOSPC, "No space left on device")
            self.left -= len(data)
            return self.inner.write(data)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)))
    monkeypatch.setattr(shards, "open", FillingFile, raising=False)
    with pytest.raises(OutputWriteError) as info:
        quantize_model_free(source, tmp_path / "out", progress=False)
    message = str(info.value)
    assert re.match(f"could not write {tmp_path / 'out'}.*No space left", message)  # no temp dir named
    assert re.search(
        r"the checkpoint needs about [\d.]+ MiB, [\d.]+ (GiB|MiB) free now; nothing was kept", message
    )
    assert info.value.errno == errno.ENOSPC
    _nothing_written(tmp_path)


def test_a_real_write_failure_from_a_file_size_limit_leaves_nothing(tmp_path, save_checkpoint) -> None:
    import resource
    import signal

    source = save_checkpoint(build_model(LlamaConfig(**TINY_LLAMA)))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))  # the one output shard is larger
    try:
        with pytest.raises(OutputWriteError, match=r"File too large.*the checkpoint needs about") as info:
            quantize_model_free(source, tmp_path / "out", progress=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert info.value.errno == errno.EFBIG
    _nothing_written(tmp_path)
