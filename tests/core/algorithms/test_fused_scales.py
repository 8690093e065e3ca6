"""Layers a runtime fuses share NVFP4's global scale (autoround.algorithms.fused_scales), as
Intel auto-round 0.16.1's ``update_block_global_scale_if_needed`` makes them: the values and the
quantize-dequantized weights bit for bit (tests/fixtures/intel/fused_gs.safetensors, made by
scripts/intel/make_fused_gs_fixture.py), in RTN, optimized RTN and SignRound."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from autoround import quantize
from autoround.algorithms import quantize_rtn
from autoround.algorithms.fused_scales import fused_groups, fused_tensor_stats
from autoround.algorithms.opt_rtn import OptRtnSettings, opt_rtn_weight, quantize_opt_rtn
from autoround.algorithms.signround import SignRoundSettings, TunedLinear, TunedParams, qdq_with
from autoround.dtypes import DTYPES
from autoround.dtypes.base import shared_statistic_type, with_shared_statistic
from autoround.layer_plan import resolve
from autoround.layer_quant import quantize_weight
from autoround.schemes import PRESETS, Scheme

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "intel" / "fused_gs.safetensors"
NVFP4 = PRESETS["NVFP4"].replace(act_bits=16)
W4 = PRESETS["W4A16"]
#: The fixture's layers (names inside a decoder block), by fused group.
QKV = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
GATE_UP = ("mlp.gate_proj", "mlp.up_proj")
#: A llama whose block has the fixture's shapes (q/k/v 32x32, gate/up 64x32), all quantized.
SMALL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 16,
}


@pytest.fixture(scope="module")
def intel() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE)


@pytest.fixture
def llama(make_llama, intel):
    """The small llama with the fixture's weights in both blocks (q/k/v and gate/up of
    different max|W|)."""
    model = make_llama(**SMALL)
    with torch.no_grad():
        for block in model.model.layers:
            for name in QKV + GATE_UP:
                block.get_submodule(name).weight.copy_(intel[f"weight.{name}"])
    return model


def _names(prefix: str, *children: str) -> dict[str, Scheme]:
    return {f"{prefix}{child}": NVFP4 for child in children}


def test_groups_are_found_by_intels_rule() -> None:
    root = nn.Module()
    root.d = nn.Module()
    root.cross = nn.Module()
    root.cross.is_cross_attention = True
    layers = {
        **_names("a.", "q_proj", "k_proj", "v_proj", "o_proj"),
        **_names("m.", "gate_proj", "up_proj", "down_proj"),
        **_names("experts.0.", "w1", "w2", "w3"),
        **_names("d.", "to_q", "to_k", "to_v"),
        **_names("cross.", "to_q", "to_k", "to_v"),
        **_names("partial.", "q_proj", "k_proj"),  # v_proj not planned
        "mixed.gate_proj": NVFP4,
        "mixed.up_proj": W4,  # one member of another data type
        **{f"ints.{c}": W4 for c in ("q_proj", "k_proj", "v_proj")},
    }
    assert fused_groups(root, layers) == [
        ("a.q_proj", "a.k_proj", "a.v_proj"),
        ("d.to_q", "d.to_k", "d.to_v"),
        ("experts.0.w1", "experts.0.w3"),
        ("m.gate_proj", "m.up_proj"),
    ]


def test_moe_experts_gate_and_up_are_groups(tiny_qwen3_moe) -> None:
    plan = resolve(tiny_qwen3_moe, NVFP4)
    groups = fused_groups(tiny_qwen3_moe, plan.quantized())
    experts = [g for g in groups if ".experts." in g[0]]
    assert len(experts) == 2 * 4  # 2 blocks of 4 experts
    assert ("model.layers.0.mlp.experts.3.gate_proj", "model.layers.0.mlp.experts.3.up_proj") in experts
    assert (
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.k_proj",
        "model.layers.1.self_attn.v_proj",
    ) in groups


def test_only_nvfp4_has_a_statistic_to_share() -> None:
    assert [name for name, dtype in DTYPES.items() if shared_statistic_type(dtype)] == ["nv_fp"]
    with pytest.raises(ValueError, match="no per-tensor statistic"):
        with_shared_statistic(DTYPES["int"], torch.tensor(1.0))


def test_the_shared_global_scale_is_intels(llama, intel) -> None:
    block = llama.model.layers[0]
    layers = {name: NVFP4 for name in QKV + GATE_UP + ("self_attn.o_proj", "mlp.down_proj")}
    stats = fused_tensor_stats(block, layers)
    assert set(stats) == set(QKV + GATE_UP)  # o_proj and down_proj keep their own
    # all but the member with the largest max|W| of each group get another scale than their own
    moved = {n for n in QKV + GATE_UP if not torch.equal(intel[f"gs.{n}"], intel[f"own_gs.{n}"])}
    assert moved == {"self_attn.q_proj", "self_attn.v_proj", "mlp.gate_proj"}
    for name in QKV + GATE_UP:
        weight = block.get_submodule(name).weight.detach()
        qdq, quant = quantize_weight(weight, NVFP4, tensor_stat=stats[name])
        assert quant.global_scale is not None
        assert torch.equal(quant.global_scale, intel[f"gs.{name}"]), name
        assert torch.equal(qdq, intel[f"rtn.{name}"]), name


def test_optimized_rtn_with_the_shared_scale_is_intels(llama, intel) -> None:
    block = llama.model.layers[0]
    stats = fused_tensor_stats(block, dict.fromkeys(QKV + GATE_UP, NVFP4))
    for name in QKV + GATE_UP:
        weight = block.get_submodule(name).weight.detach()
        qdq, quant = opt_rtn_weight(
            weight, NVFP4, intel["imatrix"], torch.float32, OptRtnSettings.intel(), stats[name]
        )
        assert quant.global_scale is not None
        assert torch.equal(quant.global_scale, intel[f"gs.{name}"]), name
        assert torch.equal(qdq, intel[f"opt_rtn.{name}"]), name


def _global_scales(layers: dict, prefix: str, names: tuple[str, ...]) -> list[float]:
    return [layers[f"{prefix}.{name}"].global_scale.item() for name in names]


def test_optimized_rtn_over_a_model_shares_per_group(llama, intel) -> None:
    # down_proj as W4A16: layers of other data types are quantized as before
    plan = resolve(llama, NVFP4, {r"down_proj$": "W4A16"})
    down = llama.model.layers[0].mlp.down_proj.weight.detach().clone()
    layers = quantize_opt_rtn(llama, plan, compute_dtype=torch.float32, progress=False)
    for index in range(2):
        prefix = f"model.layers.{index}"
        assert _global_scales(layers, prefix, QKV) == [intel["gs.self_attn.q_proj"].item()] * 3
        assert _global_scales(layers, prefix, GATE_UP) == [intel["gs.mlp.gate_proj"].item()] * 2
        assert layers[f"{prefix}.mlp.down_proj"].global_scale is None
    expected, _ = opt_rtn_weight(down, plan.quantized()["model.layers.0.mlp.down_proj"])
    assert torch.equal(llama.model.layers[0].mlp.down_proj.weight, expected)


def test_rtn_over_a_model_is_intels(llama, intel) -> None:
    layers = quantize_rtn(llama, resolve(llama, NVFP4), progress=False)
    for index, block in enumerate(llama.model.layers):
        for name in QKV + GATE_UP:
            assert torch.equal(layers[f"model.layers.{index}.{name}"].global_scale, intel[f"gs.{name}"])
            assert torch.equal(block.get_submodule(name).weight, intel[f"rtn.{name}"]), name


def test_the_untrained_wrapper_is_rtn_under_the_shared_scale(llama, intel) -> None:
    layer = llama.model.layers[0].self_attn.v_proj
    stat = fused_tensor_stats(llama.model.layers[0], dict.fromkeys(QKV, NVFP4))["self_attn.v_proj"]
    tuned = TunedLinear(layer, NVFP4, tune_minmax=True, tensor_stat=stat)
    assert torch.equal(tuned.qdq_weight().detach(), intel["rtn.self_attn.v_proj"])
    params = TunedParams(tuned.v.detach(), tuned.min_scale.detach(), tuned.max_scale.detach(), None, stat)
    qdq, quant = qdq_with(layer.weight.detach(), NVFP4, params)
    assert torch.equal(qdq, intel["rtn.self_attn.v_proj"])
    assert torch.equal(quant.global_scale, intel["gs.self_attn.v_proj"])


@pytest.mark.parametrize("alg_ext", [True, False])
def test_signround_shares_per_group(llama, intel, alg_ext: bool) -> None:
    torch.manual_seed(1)
    calibration = torch.randint(0, 128, (4, 16))
    settings = SignRoundSettings(iters=2, batch_size=4, enable_alg_ext=alg_ext)
    tuned = quantize(llama, NVFP4, tuning=settings, calibration=calibration, progress=False)
    for index in range(2):
        prefix = f"model.layers.{index}"
        # the tuned blocks' inputs differ, not their weights: the same shared scales
        assert _global_scales(tuned.layers, prefix, QKV) == [intel["gs.self_attn.q_proj"].item()] * 3
        assert _global_scales(tuned.layers, prefix, GATE_UP) == [intel["gs.mlp.gate_proj"].item()] * 2
