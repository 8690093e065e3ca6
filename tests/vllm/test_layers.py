"""Schemes of engine layers: fused q/k/v and gate/up take their parts' one scheme."""

from __future__ import annotations

import pytest

from autoround.formats.auto_round import parse_config
from autoround_vllm.layers import FusedSchemeError, part_names, scheme_for_layer

BASE = {
    "quant_method": "auto-round",
    "packing_format": "auto_round:auto_gptq",
    "bits": 4,
    "group_size": 128,
    "sym": True,
    "data_type": "int",
    "block_name_to_quantize": "model.layers",
}


def spec(extra=None):
    return parse_config({**BASE, "extra_config": extra or {}})


def test_part_names():
    assert part_names("model.layers.0.self_attn.qkv_proj") == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.k_proj",
        "model.layers.0.self_attn.v_proj",
    ]
    assert part_names("model.layers.0.mlp.down_proj") == ["model.layers.0.mlp.down_proj"]
    assert part_names("a.w13", {"w13": ["w1", "w3"]}) == ["a.w1", "a.w3"]


def test_default_and_override():
    s = spec({"model.layers.0.mlp.down_proj": {"bits": 8}})
    assert scheme_for_layer(s, "model.layers.0.mlp.gate_up_proj").bits == 4
    assert scheme_for_layer(s, "model.layers.0.mlp.down_proj").bits == 8
    assert scheme_for_layer(s, "lm_head") is None


def test_all_parts_unquantized_is_unquantized():
    extra = {
        f"model.layers.1.self_attn.{p}": {"bits": 16, "data_type": "fp"}
        for p in ("q_proj", "k_proj", "v_proj")
    }
    assert scheme_for_layer(spec(extra), "model.layers.1.self_attn.qkv_proj") is None


def test_mixed_fused_parts_refused_naming_each():
    s = spec({"model.layers.2.self_attn.v_proj": {"bits": 8}})
    with pytest.raises(FusedSchemeError) as err:
        scheme_for_layer(s, "model.layers.2.self_attn.qkv_proj")
    message = str(err.value)
    assert "model.layers.2.self_attn.qkv_proj" in message
    assert "v_proj (W8G128 sym int)" in message and "q_proj (W4G128 sym int)" in message
