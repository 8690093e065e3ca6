"""A quantized lm_head: listed in extra_config, saved untied when it was tied, loaded with its values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Gemma3Config

from autoround import quantize, save
from autoround.formats.checkpoint import untied
from autoround.loading import load_dense, load_quantized
from autoround.nn import QuantLinear

LOADERS = {
    "dense": load_dense,
    "packed-torch": lambda path: load_quantized(path, backend="torch"),
    "packed-cpu": lambda path: load_quantized(path, backend="cpu"),
}


def _saved(tmp_path: Path, model, **kwargs):
    qm = quantize(model, "W4A16", progress=False, **kwargs)
    return qm, save(qm, tmp_path / "ckpt")


def _ids() -> torch.Tensor:
    return torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(_ids()).logits.float()


def _config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def _head_is_untied(model) -> bool:
    head = model.get_output_embeddings()
    return isinstance(head, QuantLinear) or head.weight is not model.get_input_embeddings().weight


def test_an_untied_lm_head_quantized_with_the_default_scheme_is_listed_with_every_field(
    tmp_path, tiny_qwen3
) -> None:
    _, path = _saved(tmp_path, tiny_qwen3, quant_lm_head=True)
    extra = _config(path)["quantization_config"]["extra_config"]
    assert extra == {"lm_head": {"bits": 4, "group_size": 128, "sym": True, "data_type": "int"}}


@pytest.mark.parametrize("loader", LOADERS)
def test_an_untied_quantized_lm_head_loads_with_the_fake_quantized_logits(
    tmp_path, tiny_qwen3, loader
) -> None:
    qm, path = _saved(tmp_path, tiny_qwen3, quant_lm_head=True)
    loaded = LOADERS[loader](path)
    if loader != "dense":
        assert isinstance(loaded.lm_head, QuantLinear)
    torch.testing.assert_close(_logits(loaded), _logits(qm.model), atol=1e-4, rtol=1e-4)


def test_a_tied_quantized_lm_head_is_saved_untied_with_the_embedding_dense(tmp_path, tiny_llama) -> None:
    qm, path = _saved(tmp_path, tiny_llama, quant_lm_head=True)
    config = _config(path)
    assert config["tie_word_embeddings"] is False
    assert config["quantization_config"]["extra_config"]["lm_head"]["bits"] == 4
    tensors = load_file(path / "model.safetensors")
    assert {"lm_head.qweight", "lm_head.qzeros", "lm_head.scales"} <= set(tensors)
    assert "lm_head.weight" not in tensors
    embedding = qm.model.get_input_embeddings().weight
    assert torch.equal(tensors["model.embed_tokens.weight"], embedding)
    # the caller's model and config are left as they were
    assert qm.model.config.tie_word_embeddings is True
    assert qm.model.lm_head.weight is embedding


@pytest.mark.parametrize("loader", LOADERS)
def test_a_tied_quantized_lm_head_loads_untied_with_the_fake_quantized_logits(
    tmp_path, tiny_llama, loader
) -> None:
    qm, path = _saved(tmp_path, tiny_llama, layer_config={"lm_head": "W8A16"})
    loaded = LOADERS[loader](path)
    assert _head_is_untied(loaded) and loaded.config.tie_word_embeddings is False
    torch.testing.assert_close(_logits(loaded), _logits(qm.model), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("loader", LOADERS)
def test_a_checkpoint_whose_config_still_ties_a_quantized_lm_head_is_loaded_untied(
    tmp_path, tiny_llama, loader
) -> None:
    qm, path = _saved(tmp_path, tiny_llama, quant_lm_head=True)
    config = _config(path)
    config["tie_word_embeddings"] = True
    (path / "config.json").write_text(json.dumps(config))
    tensors = load_file(path / "model.safetensors")
    embedding = tensors["model.embed_tokens.weight"] * 2  # tying back would now show
    tensors["model.embed_tokens.weight"] = embedding
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    loaded = LOADERS[loader](path)
    assert _head_is_untied(loaded)
    assert torch.equal(loaded.get_input_embeddings().weight, embedding)
    qm.model.get_input_embeddings().weight = torch.nn.Parameter(embedding)  # unties the reference
    torch.testing.assert_close(_logits(loaded), _logits(qm.model), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen3"])
def test_without_a_quantized_lm_head_the_checkpoint_is_unchanged(tmp_path, request, fixture) -> None:
    model = request.getfixturevalue(fixture)
    tied = model.config.tie_word_embeddings
    _, path = _saved(tmp_path, model)
    config = _config(path)
    assert config["tie_word_embeddings"] is tied and "extra_config" not in config["quantization_config"]
    tensors = load_file(path / "model.safetensors")
    assert not any(k.startswith("lm_head.q") for k in tensors)
    assert ("lm_head.weight" in tensors) is not tied
    loaded = load_quantized(path)
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) is tied


def test_untying_covers_the_text_config_and_is_undone() -> None:
    config = Gemma3Config()
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = True
    with untied(config):
        assert config.tie_word_embeddings is False and config.text_config.tie_word_embeddings is False
    assert config.tie_word_embeddings is True and config.text_config.tie_word_embeddings is True
