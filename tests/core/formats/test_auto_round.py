"""The auto_round checkpoint: layout, config keys, exact round trip, refusal of bad configs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from autoround import quantize, save
from autoround.errors import CheckpointError
from autoround.formats.auto_round import parse_config
from autoround.loading import load_dense
from autoround.packing import unpack_int32


def _saved(tmp_path, model, scheme="W4A16", **kwargs):
    qm = quantize(model, scheme, progress=False, **kwargs)
    return qm, save(qm, tmp_path / "ckpt")


def _tensors(path):
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


def test_w4a16_layout_matches_intels(tmp_path, tiny_llama_bf16) -> None:
    _, path = _saved(tmp_path, tiny_llama_bf16, "W4A16", group_size=64)
    tensors = _tensors(path)
    name = "model.layers.0.self_attn.q_proj"
    assert (
        tensors[f"{name}.qweight"].shape == (96 * 4 // 32, 96)
        and tensors[f"{name}.qweight"].dtype == torch.int32
    )
    assert tensors[f"{name}.qzeros"].shape == (2, 96 * 4 // 32)
    assert tensors[f"{name}.scales"].shape == (2, 96) and tensors[f"{name}.scales"].dtype == torch.float16
    assert f"{name}.weight" not in tensors
    # symmetric 4-bit zero point 8, stored minus one: every nibble 7
    assert torch.all(tensors[f"{name}.qzeros"] == 0x77777777)
    assert "lm_head.weight" not in tensors, "tied embeddings stay tied"
    assert tensors["model.embed_tokens.weight"].dtype == torch.bfloat16


def test_config_has_intels_keys(tmp_path, tiny_llama_bf16) -> None:
    _, path = _saved(tmp_path, tiny_llama_bf16, "W2A16G64")
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    assert config == json.loads((path / "quantization_config.json").read_text())
    expected = {
        "bits": 2,
        "group_size": 64,
        "sym": True,
        "data_type": "int",
        "enable_quanted_input": False,
        "block_name_to_quantize": "model.layers",
        "quant_method": "auto-round",
        "packing_format": "auto_round:auto_gptq",
    }
    assert {k: config[k] for k in expected} == expected
    assert set(config) == {*expected, "autoround_version"}


@pytest.mark.parametrize(
    ("scheme", "overrides"),
    [
        ("W4A16", {"group_size": 64}),
        ("W2A16G64", {}),
        ("W3A16", {"group_size": 32}),
        ("W8A16", {"group_size": -1}),
        ("W4A16", {"group_size": 32, "sym": False}),
    ],
)
def test_unpacking_gives_back_the_quantized_weights_exactly(
    tmp_path, tiny_llama_bf16, scheme, overrides
) -> None:
    qm, path = _saved(tmp_path, tiny_llama_bf16, scheme, **overrides)
    dense = load_dense(path)
    for name, param in qm.model.state_dict().items():
        assert torch.equal(dense.state_dict()[name], param), name


def test_asymmetric_zero_points_are_stored_as_they_are(tmp_path, tiny_llama) -> None:
    qm, path = _saved(tmp_path, tiny_llama, "W4A16", group_size=32, sym=False)
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    assert config["packing_format"] == "auto_round"
    name = "model.layers.1.mlp.up_proj"
    stored = unpack_int32(_tensors(path)[f"{name}.qzeros"], 4, dim=1)
    assert torch.equal(stored.to(torch.int32), qm.layers[name].zero.t())


def test_layer_overrides_go_to_extra_config(tmp_path, tiny_llama) -> None:
    layer_config = {
        "model.layers.0.mlp.down_proj": {"bits": 8},
        "model.layers.1.self_attn.v_proj": {"bits": 16},
        "lm_head": "W8A16",
    }
    qm, path = _saved(tmp_path, tiny_llama, "W4A16", group_size=32, layer_config=layer_config)
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    assert config["extra_config"] == {
        "model.layers.0.mlp.down_proj": {"bits": 8},
        "model.layers.1.self_attn.v_proj": {"bits": 16, "data_type": "fp"},
        "lm_head": {"bits": 8, "group_size": 128, "sym": True, "data_type": "int"},
    }
    tensors = _tensors(path)
    assert tensors["model.layers.1.self_attn.v_proj.weight"].dtype == torch.float32
    assert tensors["model.layers.0.mlp.down_proj.qweight"].shape == (160 * 8 // 32, 96)
    dense = load_dense(path)
    for name, param in qm.model.state_dict().items():
        assert torch.equal(dense.state_dict()[name], param), name


def test_saving_into_a_non_empty_dir_is_refused_unless_overwrite(tmp_path, tiny_llama) -> None:
    qm = quantize(tiny_llama, "W4A16", group_size=32, progress=False)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        save(qm, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "keep.txt").read_text() == "mine"
    save(qm, tmp_path / "ckpt", overwrite=True)
    assert not (tmp_path / "ckpt" / "keep.txt").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bits": None}, r"missing key\(s\) \['bits'\]"),
        ({"bits": 5}, r"bits=5 cannot be unpacked; allowed: \[2, 3, 4, 8\]"),
        ({"packing_format": "auto_round:marlin"}, r"packing_format 'auto_round:marlin' is not supported"),
        ({"quant_method": "gptq"}, r"quant_method is 'gptq'"),
        ({"data_type": "nf4"}, r"unknown data_type 'nf4'"),
        (
            {"data_type": "mx_fp", "group_size": 32},
            r"data_type='mx_fp' cannot be read from this format; allowed: \['int'\]",
        ),
    ],
)
def test_bad_quantization_configs_name_the_key(change, message) -> None:
    config = {
        "bits": 4,
        "group_size": 128,
        "sym": True,
        "data_type": "int",
        "quant_method": "auto-round",
        "packing_format": "auto_round:auto_gptq",
    }
    config.update(change)
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(CheckpointError, match=message):
        parse_config(config)


def test_packed_shapes_that_disagree_with_the_config_are_named(tmp_path, tiny_llama) -> None:
    _, path = _saved(tmp_path, tiny_llama, "W4A16", group_size=32)
    config_path = path / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"]["group_size"] = 64
    config_path.write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=(
            r"model\.layers\.0\.\S+ has shape \(\d+, \d+\) in \S+, "
            r"but config.json's scheme .*group_size=64"
        ),
    ):
        load_dense(path)
