"""Which method takes an ``auto-round`` checkpoint: ours where stock vLLM cannot serve it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from autoround_vllm.selection import METHOD_NAME, choose_method, input_widths, stock_vllm_gap

W4G128 = {
    "quant_method": "auto-round",
    "packing_format": "auto_round:auto_gptq",
    "bits": 4,
    "group_size": 128,
    "sym": True,
    "data_type": "int",
    "block_name_to_quantize": "model.layers",
}


def cfg(**changes):
    return {**W4G128, **changes}


def test_cpu_always_ours():
    assert "CUDA only" in stock_vllm_gap(W4G128, "cpu")
    assert choose_method(W4G128, None, "cpu") == METHOD_NAME


def test_cuda_plain_w4_left_to_stock():
    assert stock_vllm_gap(W4G128, "cuda", widths=(4096, 11008)) is None
    assert choose_method(W4G128, None, "cuda", (4096,)) is None


@pytest.mark.parametrize(
    "config,why",
    [
        (cfg(bits=2, group_size=64), "2-bit"),
        (cfg(bits=3), "3-bit"),
        (cfg(sym=False, packing_format="auto_round"), "asymmetric"),
        (cfg(group_size=256), "group size 256"),
        (cfg(extra_config={"model.layers.0.mlp.down_proj": {"bits": 8}}), "mixed"),
    ],
)
def test_cuda_gaps(config, why):
    assert why in stock_vllm_gap(config, "cuda")
    assert choose_method(config, None, "cuda") == METHOD_NAME


def test_partial_groups_need_ours():
    assert "partial last groups" in stock_vllm_gap(W4G128, "cuda", widths=(576, 1536))


def test_unquantized_extra_entries_are_not_a_mix():
    config = cfg(extra_config={"model.layers.0.mlp.down_proj": {"bits": 16, "data_type": "fp"}})
    assert stock_vllm_gap(config, "cuda") is None


def test_user_choice_wins():
    assert choose_method(W4G128, METHOD_NAME, "cuda") == METHOD_NAME
    assert choose_method(W4G128, "inc", "cpu") is None


def test_other_formats_untouched():
    assert choose_method({"quant_method": "gptq", "bits": 4}, None, "cpu") is None


def test_input_widths_from_config():
    config = SimpleNamespace(hidden_size=576, intermediate_size=1536, num_attention_heads=9, head_dim=64)
    assert input_widths(config) == (576, 1536, 576)
    assert input_widths(None) == ()


def test_unreadable_configs_left_to_stock():
    mxfp = cfg(data_type="mx_fp", bits=4, group_size=32)
    assert choose_method(mxfp, None, "cpu") is None
    assert choose_method(cfg(bits=5), None, "cuda") is None
    assert choose_method(cfg(bits=5), METHOD_NAME, "cpu") == METHOD_NAME  # from_config then says why
