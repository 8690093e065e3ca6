"""Pre-flight: a plan the format or vLLM cannot take is refused before any work, with names."""

from __future__ import annotations

import logging

import pytest
import torch

from autoround import AutoRound
from autoround.errors import SchemeError
from autoround.formats.preflight import check_plan as check
from autoround.layer_plan import resolve
from autoround.schemes import PRESETS

W4 = PRESETS["W4A16G32"]
CALIBRATION = [torch.arange(i, i + 32) % 128 for i in range(4)]


def test_a_consistent_plan_passes(tiny_llama) -> None:
    check(tiny_llama, resolve(tiny_llama, W4), "auto_round")


def test_qkv_parts_with_different_bits_are_named(tiny_llama) -> None:
    plan = resolve(tiny_llama, W4, {"model.layers.0.self_attn.k_proj": {"bits": 8}})
    with pytest.raises(
        SchemeError, match=r"model\.layers\.0\.self_attn\.qkv_proj .*k_proj \(W8G32\).*q_proj \(W4G32\)"
    ):
        check(tiny_llama, plan, "auto_round")


def test_gate_up_with_one_part_unquantized_is_refused(tiny_llama) -> None:
    plan = resolve(tiny_llama, W4, {"model.layers.1.mlp.up_proj": {"bits": 16}})
    with pytest.raises(SchemeError, match=r"model\.layers\.1\.mlp\.gate_up_proj.*up_proj \(16-bit\)"):
        check(tiny_llama, plan, "auto_round")


def test_moe_experts_must_share_a_scheme(tiny_qwen3_moe) -> None:
    plan = resolve(tiny_qwen3_moe, W4, {"model.layers.0.mlp.experts.1.down_proj": {"bits": 2}})
    with pytest.raises(SchemeError, match=r"model\.layers\.0\.mlp\.experts\.\*\.down_proj"):
        check(tiny_qwen3_moe, plan, "auto_round")


def test_bits_the_format_cannot_store_are_refused(tiny_llama) -> None:
    with pytest.raises(SchemeError, match=r"int 5-bit cannot be stored in format 'auto_round'"):
        check(tiny_llama, resolve(tiny_llama, PRESETS["W5A16G32"]), "auto_round")


def test_partial_groups_only_warn(tiny_llama, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        check(tiny_llama, resolve(tiny_llama, PRESETS["W4A16G64"]), "auto_round")
    assert "stock vLLM cannot load them" in caplog.text


def test_autoround_refuses_before_tuning(tmp_path, tiny_llama, monkeypatch) -> None:
    import autoround.runner as runner

    monkeypatch.setattr(runner, "execute", lambda *a, **k: pytest.fail("tuning must not start"))
    rounder = AutoRound(
        tiny_llama,
        None,
        scheme=W4,
        dataset=CALIBRATION,
        iters=2,
        nsamples=4,
        seqlen=32,
        layer_config={"model.layers.0.self_attn.v_proj": {"bits": 8}},
    )
    with pytest.raises(SchemeError, match="qkv_proj"):
        rounder.quantize_and_save(tmp_path / "out")


def test_rows_narrower_than_the_group_are_not_called_partial(make_llama, caplog) -> None:
    model = make_llama(hidden_size=64, intermediate_size=128, num_attention_heads=2, head_dim=32)
    with caplog.at_level(logging.WARNING):
        check(model, resolve(model, PRESETS["W4A16"]), "auto_round")
    assert "partial last group" not in caplog.text
