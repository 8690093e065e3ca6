"""Optimized RTN: the imatrix-weighted scale search (Intel's ``opt_rtn_int_sym``) over a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from autoround.algorithms import quantize_rtn
from autoround.algorithms.imatrix import collect_imatrix
from autoround.algorithms.opt_rtn import OptRtnSettings, importance_layers, opt_rtn_weight, quantize_opt_rtn
from autoround.dtypes import to_groups
from autoround.dtypes.int_search import group_importance, opt_rtn_sym_codes, search_sym_scale
from autoround.layer_plan import resolve
from autoround.layer_quant import codes_of, dequantize_codes, quantize_weight
from autoround.schemes import PRESETS, Scheme

FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel" / "opt_rtn.safetensors"


def _inv(x: torch.Tensor) -> torch.Tensor:
    return torch.where(
        x.abs() >= 1e-30, 1.0 / torch.where(x.abs() >= 1e-30, x, torch.ones_like(x)), torch.zeros_like(x)
    )


def _reference_search(grouped: torch.Tensor, bits: int, importance: torch.Tensor | None) -> torch.Tensor:
    """Plain restatement: one candidate at a time, strict improvement, Intel's candidate order."""
    nmax = 2 ** (bits - 1)
    if bits == 2:
        count, step = 90, 0.01
    else:
        step = nmax * 0.75 / 200 * 2
        count = int(nmax * 0.75 / step)
    gmax = torch.take_along_dim(grouped, grouped.abs().argmax(-1, keepdim=True), -1)
    best_loss, best_scale = None, None
    for k in [0, *range(-count, 0), *range(1, count + 1)]:
        iscale = -(nmax - step * k) * _inv(gmax)
        scale = _inv(iscale)
        err = (scale * torch.round(iscale * grouped).clamp(-nmax, nmax - 1) - grouped).float() ** 2
        loss = (err * importance if importance is not None else err).sum(-1)
        if best_loss is None:
            best_loss, best_scale = loss, scale.clone()
            continue
        better = loss < best_loss
        best_scale[better] = scale[better]
        best_loss = torch.where(better, loss, best_loss)
    return best_scale


@pytest.mark.parametrize(
    ("dtype", "bits", "weighted"),
    [
        (torch.float32, 4, False),
        (torch.float32, 4, True),
        (torch.float32, 3, True),
        (torch.float32, 2, True),
        (torch.bfloat16, 4, True),
        (torch.bfloat16, 2, True),
    ],
)
def test_search_equals_a_plain_loop_over_candidates(dtype: torch.dtype, bits: int, weighted: bool) -> None:
    gen = torch.Generator().manual_seed(bits)
    grouped = (torch.randn(24, 32, generator=gen) * 0.02).to(dtype)
    grouped[3] = 0.0
    importance = torch.rand(24, 32, generator=gen) if weighted else None
    expected = _reference_search(grouped, bits, importance)
    assert torch.equal(search_sym_scale(grouped, bits, importance), expected)
    assert torch.equal(
        search_sym_scale(grouped, bits, importance, exhaustive=True, chunk_bytes=2**16), expected
    )


def _fixture_cases() -> list[dict]:
    if not FIXTURE.is_file():
        return []
    with safe_open(FIXTURE, "pt") as f:
        return json.loads(f.metadata()["cases"])


@pytest.mark.parametrize("case", _fixture_cases(), ids=lambda c: c["name"])
def test_reproduces_intel_opt_rtn_sym(case: dict) -> None:
    with safe_open(FIXTURE, "pt") as f:
        names = [k for k in f.keys() if k.startswith(case["name"] + ".")]  # noqa: SIM118 (not a dict)
        t = {k.split(".", 1)[1]: f.get_tensor(k) for k in names}
    grouped, _ = to_groups(t["weight"], case["group_size"])
    imp = None
    if "imatrix" in t:
        imp = group_importance(t["imatrix"], grouped, case["group_size"], case["bits"])
    codes, scale = opt_rtn_sym_codes(grouped, case["bits"], imp)
    assert torch.equal(scale, t["scale"])
    qdq = (codes * scale).to(grouped.dtype).reshape(t["weight"].shape[0], -1)[:, : t["weight"].shape[1]]
    assert torch.equal(qdq, t["qdq"])


def test_codes_round_trip_and_fp16_scale(tiny_llama_bf16) -> None:
    scheme = PRESETS["W2A16G64"]
    weight = tiny_llama_bf16.model.layers[0].mlp.down_proj.weight.detach()  # 96 x 160: partial group
    qdq, quant = opt_rtn_weight(weight, scheme, torch.rand(weight.shape[1]) + 0.1)
    assert quant.scale.dtype == torch.float16 and quant.scale.shape == (96, 3)
    assert quant.zero.dtype == torch.int32 and bool((quant.zero == 2).all())
    assert torch.equal(dequantize_codes(codes_of(qdq, quant), quant, qdq.dtype), qdq)


def test_opt_rtn_error_is_at_most_rtns_on_every_layer(tiny_llama) -> None:
    import copy

    plan = resolve(tiny_llama, PRESETS["W4A16G32"])
    before = {n: tiny_llama.get_submodule(n).weight.detach().clone() for n in plan.quantized()}
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    imatrix = collect_imatrix(tiny_llama, plan.quantized(), ids, progress=False)
    assert set(imatrix) == set(plan.quantized())
    rtn_model = copy.deepcopy(tiny_llama)
    quantize_rtn(rtn_model, plan, progress=False)
    layers = quantize_opt_rtn(tiny_llama, plan, imatrix, progress=False)
    assert set(layers) == set(plan.quantized())
    for name, w in before.items():
        opt_err = ((tiny_llama.get_submodule(name).weight - w) ** 2 * imatrix[name]).sum()
        rtn_err = ((rtn_model.get_submodule(name).weight - w) ** 2 * imatrix[name]).sum()
        assert opt_err <= rtn_err, name
        assert opt_err < rtn_err, f"{name}: the search found nothing better than RTN"


def test_asymmetric_layers_get_plain_rtn(tiny_llama) -> None:
    scheme = PRESETS["W4A16G32"].replace(sym=False)
    weight = tiny_llama.model.layers[1].self_attn.o_proj.weight.detach()
    qdq, quant = opt_rtn_weight(weight, scheme, torch.rand(weight.shape[1]))
    expected, expected_quant = quantize_weight(weight, scheme)
    assert torch.equal(qdq, expected) and torch.equal(quant.zero, expected_quant.zero)


def test_imatrix_is_the_mean_over_samples_of_summed_squared_inputs(tiny_llama) -> None:
    name = "model.layers.1.mlp.down_proj"
    ids = torch.randint(0, 128, (3, 8), generator=torch.Generator().manual_seed(1))
    seen: list[torch.Tensor] = []
    handle = tiny_llama.get_submodule(name).register_forward_pre_hook(
        lambda _m, a: seen.append(a[0].detach())
    )
    with torch.no_grad():
        tiny_llama(input_ids=ids)
    handle.remove()
    expected = seen[0].reshape(-1, seen[0].shape[-1]).pow(2).sum(0) / 3
    got = collect_imatrix(tiny_llama, [name], ids, batch_size=2, progress=False)[name]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_opt_rtn_on_cuda_of_a_cpu_model_matches_the_cpu_result(tiny_llama) -> None:
    import copy

    from autoround import quantize

    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    # Intel's exact search: the default's float32 ranking may break near-ties differently on CUDA
    intel = OptRtnSettings.intel()
    on_cpu = quantize(copy.deepcopy(tiny_llama), "W4A16G32", opt_rtn=intel, calibration=ids, progress=False)
    on_cuda = quantize(tiny_llama, "W4A16G32", opt_rtn=intel, calibration=ids, device="cuda", progress=False)
    for name, quant in on_cpu.layers.items():
        assert torch.equal(quant.scale, on_cuda.layers[name].scale), name
    assert next(tiny_llama.parameters()).device.type == "cpu", "the model stays where it was"


def _weighted_error(weight: torch.Tensor, qdq: torch.Tensor, imatrix: torch.Tensor) -> float:
    return float(((qdq.float() - weight.float()) ** 2 * imatrix).sum())


def test_default_refinement_lowers_the_weighted_error_below_intels_search_on_every_layer(tiny_llama) -> None:
    scheme = PRESETS["W4A16G32"]
    gen = torch.Generator().manual_seed(3)
    for name, module in tiny_llama.named_modules():
        if not isinstance(module, torch.nn.Linear) or "layers" not in name:
            continue
        weight = module.weight.detach()
        imatrix = torch.rand(weight.shape[1], generator=gen) ** 4 + 1e-3
        intel, _ = opt_rtn_weight(weight, scheme, imatrix, settings=OptRtnSettings.intel())
        ours, quant = opt_rtn_weight(weight, scheme, imatrix)
        assert _weighted_error(weight, ours, imatrix) < _weighted_error(weight, intel, imatrix), name
        # what the model holds is what the checkpoint's codes and fp16 scales dequantize to
        assert torch.equal(dequantize_codes(codes_of(ours, quant), quant, ours.dtype), ours), name


def test_intel_settings_give_intels_exact_search(tiny_llama) -> None:
    scheme = PRESETS["W2A16G64"]
    weight = tiny_llama.model.layers[0].self_attn.q_proj.weight.detach()
    imatrix = torch.rand(weight.shape[1], generator=torch.Generator().manual_seed(4)) + 0.1
    grouped, _ = to_groups(weight, scheme.group_size)
    _, expected = opt_rtn_sym_codes(grouped, 2, group_importance(imatrix, grouped, scheme.group_size, 2))
    _, quant = opt_rtn_weight(weight, scheme, imatrix, settings=OptRtnSettings.intel())
    assert torch.equal(quant.scale.reshape(-1, 1), expected.half())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"refine_steps": -1}, "refine_steps must be an integer >= 0, got -1"),
        ({"refine_steps": 1.5}, "refine_steps must be an integer >= 0, got 1.5"),
        ({"imatrix_dtype": "fp8"}, r"imatrix_dtype must be one of \[.*'bfloat16'\], got 'fp8'"),
    ],
)
def test_bad_settings_are_refused_naming_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OptRtnSettings(**kwargs)


def test_a_bf16_importance_forward_stays_close_to_the_float32_one(tiny_llama) -> None:
    names = ["model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"]  # past bf16 products
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(5))
    exact = collect_imatrix(tiny_llama, names, ids, progress=False)
    bf16 = collect_imatrix(tiny_llama, names, ids, progress=False, autocast_dtype=torch.bfloat16)
    for name in names:
        assert not torch.equal(bf16[name], exact[name]), "autocast had no effect"
        torch.testing.assert_close(bf16[name], exact[name], rtol=0.1, atol=1e-3)
        assert bf16[name].dtype == torch.float32


def test_importance_is_collected_for_symmetric_integer_layers_below_8_bits(tiny_llama) -> None:
    w4 = Scheme(bits=4, group_size=32, sym=True)
    overrides = {"down_proj": Scheme(bits=4, group_size=32, sym=False), "up_proj": Scheme(bits=8)}
    plan = resolve(tiny_llama, w4, overrides)
    names = importance_layers(plan)
    assert names and all(name in plan.quantized() for name in names)
    assert all(plan.quantized()[name] == w4 for name in names)
    assert len(names) == sum(scheme == w4 for scheme in plan.quantized().values())
