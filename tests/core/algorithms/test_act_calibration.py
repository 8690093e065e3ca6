"""Calibrated activation ranges (FP8_STATIC: static FP8 per tensor; NVFP4: its activations'
global scale) with round-to-nearest and SignRound on a tiny llama.

References: each layer's largest ``|input|`` recomputed by keeping every input the layer sees on
the unquantized model (the inputs concatenated, then one maximum); the static FP8 formula
written out in plain torch; the quantized model's own blocks chained with its hooks.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TINY_LLAMA, build_model
from transformers import LlamaConfig

import autoround
from autoround.algorithms.act_calibration import calibrate_model, collect_input_absmax
from autoround.algorithms.signround import SignRoundSettings
from autoround.algorithms.signround_blocks import quantize_signround
from autoround.layer_plan import resolve
from autoround.modeling.capture import block_output, capture_block_inputs
from autoround.nn.act_hooks import act_kind_of, detach_act_quant
from autoround.schemes import PRESETS

SCHEMES = {"fp8_static": PRESETS["FP8_STATIC"], "nvfp4": PRESETS["NVFP4"]}
#: Enough iterations that every block's best iteration beats RTN (the first steps overshoot).
ITERS = 40
BATCH = 8
PROMPT = [1, 5, 9, 3, 7, 2, 11, 4, 40, 90, 17, 64]


def _model() -> torch.nn.Module:
    # initialised wider than by default, so greedy choices are far from ties
    return build_model(LlamaConfig(**{**TINY_LLAMA, "initializer_range": 0.1}))


@pytest.fixture
def calibration() -> torch.Tensor:
    return torch.randint(0, 128, (8, 32), generator=torch.Generator().manual_seed(1))


def _reference_ranges(
    model: torch.nn.Module, names: list[str], calibration: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Every input of each named layer kept, then the largest magnitude of all of them."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    handles = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: seen[name].append(args[0].detach().clone())
        )
        for name in names
    ]
    with torch.no_grad():
        model(calibration)
    for handle in handles:
        handle.remove()
    return {name: torch.cat([x.reshape(-1) for x in xs]).abs().max() for name, xs in seen.items()}


def _fp8_static(x: torch.Tensor, absmax: torch.Tensor) -> torch.Tensor:
    """Static FP8 E4M3 per tensor in plain torch: one scale absmax / 448 (floored), clip, cast."""
    scale = torch.clamp(absmax.float() / 448.0, min=1.0 / (448.0 * 512.0))
    return ((x.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn).float() * scale).to(x.dtype)


@pytest.mark.parametrize("case", list(SCHEMES))
def test_a_static_scheme_without_calibration_is_refused_before_any_work(case: str) -> None:
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    field = "act_dynamic=False" if case == "fp8_static" else "act_data_type='nv_fp4_with_static_gs'"
    with pytest.raises(ValueError, match=rf"{field}.*calibrated on data.*pass calibration="):
        autoround.quantize(model, SCHEMES[case], progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("case", list(SCHEMES))
def test_rtn_calibrates_every_layer_on_the_unquantized_model(calibration, case: str) -> None:
    qm = autoround.quantize(_model(), SCHEMES[case], calibration=calibration, progress=False)
    names = list(qm.layers)
    assert len(names) == 14  # 7 Linears in each of 2 blocks
    reference = _reference_ranges(_model(), names, calibration)
    for name, quant in qm.layers.items():
        assert quant.input_absmax is not None and quant.input_absmax.shape == ()
        assert quant.input_absmax.dtype == torch.float32
        assert torch.equal(quant.input_absmax, reference[name]), name
        assert act_kind_of(qm.model.get_submodule(name)) == case


def test_calibrate_model_and_the_hooks_agree_with_the_reference(calibration) -> None:
    model = _model()
    names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    ranges = calibrate_model(model, names, calibration, batch_size=3, progress=False)
    reference = _reference_ranges(model, names, calibration)
    # other batches: the same maxima up to the matrix products' summation order
    assert {n: r.item() for n, r in ranges.items()} == pytest.approx(
        {n: r.item() for n, r in reference.items()}, rel=1e-6
    )
    layer = torch.nn.Sequential(torch.nn.Linear(96, 4))
    with collect_input_absmax(layer, ["0"]) as seen, torch.no_grad():
        layer(torch.empty(0, 96))  # an empty input adds nothing (Intel skips it too)
        assert seen == {}
        layer(torch.tensor([[-3.0] + [1.0] * 95]))
        layer(torch.tensor([[2.0] * 96]))
    assert seen == {"0": torch.tensor(3.0)}
    with pytest.raises(ValueError, match="input_ids must be"):
        calibrate_model(model, names, calibration[0], progress=False)


def test_the_in_memory_fp8_static_model_quantizes_with_its_stored_ranges(calibration) -> None:
    qm = autoround.quantize(_model(), "FP8_STATIC", calibration=calibration, progress=False)
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        hooked = qm.model(ids).logits
        tokens = qm.model.generate(ids, max_new_tokens=12, do_sample=False)
        assert qm.model.generate(ids, max_new_tokens=12, do_sample=False).tolist() == tokens.tolist()
    detach_act_quant(qm.model)
    handles = [
        qm.model.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, absmax=quant.input_absmax: (_fp8_static(args[0], absmax),)
        )
        for name, quant in qm.layers.items()
    ]
    with torch.no_grad():
        assert torch.equal(qm.model(ids).logits, hooked)
        assert qm.model.generate(ids, max_new_tokens=12, do_sample=False).tolist() == tokens.tolist()
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        assert not torch.equal(qm.model(ids).logits, hooked)  # the weights alone give other logits


def _block_losses(qm: Any, calibration: torch.Tensor) -> list[float]:
    """Each block's loss recomputed from the quantized model (its blocks chained, their inputs
    quantized by the model's hooks) against the unquantized model."""
    fp_model = _model()
    captured = capture_block_inputs(
        fp_model, fp_model.model.layers[0], calibration, torch.device("cpu"), False
    )
    fp_in, q_in, losses = captured.hidden, captured.hidden, []
    with torch.no_grad():
        for fp_block, q_block in zip(fp_model.model.layers, qm.model.model.layers, strict=True):
            fp_in = block_output(fp_block, fp_in, captured.kwargs)
            q_in = block_output(q_block, q_in, captured.kwargs)
            losses.append(F.mse_loss(q_in, fp_in).item())
    return losses


@pytest.mark.parametrize("case", list(SCHEMES))
def test_signround_calibrates_tunes_and_beats_rtn_on_every_block(calibration, case: str) -> None:
    settings = SignRoundSettings(iters=ITERS, batch_size=BATCH)
    qm = autoround.quantize(_model(), SCHEMES[case], tuning=settings, calibration=calibration, progress=False)
    for report in qm.reports:
        assert not report.fell_back_to_rtn, report
        assert report.tuned_loss < report.rtn_loss, report
    # block 0 is observed on the full-precision inputs (nothing before it is quantized)
    first = [n for n in qm.layers if n.startswith("model.layers.0.")]
    reference = _reference_ranges(_model(), first, calibration)
    ranges = {n: qm.layers[n].input_absmax for n in first}
    assert all(r is not None and r.shape == () for r in ranges.values())
    if case == "fp8_static":  # the range times the tuned factor in [0, 1]; some factors moved
        assert all(ranges[n] <= reference[n] for n in first)
        assert any(ranges[n] < reference[n] for n in first)
    else:  # NVFP4's activations take no factor
        assert all(torch.equal(ranges[n], reference[n]) for n in first)
    # the reported losses are those of the chained quantized blocks with the final ranges
    assert _block_losses(qm, calibration) == pytest.approx([r.tuned_loss for r in qm.reports], rel=1e-5)


def test_a_resumed_run_replays_a_finished_block_with_its_ranges(calibration) -> None:
    scheme, settings = SCHEMES["fp8_static"], SignRoundSettings(iters=6, batch_size=BATCH)
    first = _model()
    results, reports = quantize_signround(
        first, resolve(first, scheme), calibration, settings, progress=False
    )

    def restore(index: int, block: torch.nn.Module) -> dict[str, Any] | None:
        if index != 0:
            return None
        block.load_state_dict(first.model.layers[0].state_dict())
        return {n: q for n, q in results.items() if n.startswith("model.layers.0.")}

    resumed = _model()
    again_layers, again = quantize_signround(
        resumed, resolve(resumed, scheme), calibration, settings, progress=False, restore=restore
    )
    assert [(r.rtn_loss, r.tuned_loss) for r in again] == [(r.rtn_loss, r.tuned_loss) for r in reports[1:]]
    for name, quant in again_layers.items():
        assert torch.equal(quant.input_absmax, results[name].input_absmax), name
