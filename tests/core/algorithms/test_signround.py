"""SignRound: the tuned block reproduces the full-precision block better than RTN does."""

from __future__ import annotations

import logging

import pytest
import torch

from autoround import hardware, quantize, save
from autoround.algorithms import signround
from autoround.algorithms.signround import SignRoundSettings, TunedLinear
from autoround.layer_quant import codes_of, quantize_weight
from autoround.loading import load_dense
from autoround.schemes import PRESETS

W4G32 = PRESETS["W4A16G32"]


@pytest.fixture
def calibration():
    torch.manual_seed(1)
    return torch.randint(0, 128, (8, 32))


def test_each_tuned_block_beats_rtn_and_the_checkpoint_loads_back(tmp_path, tiny_llama, calibration) -> None:
    qm = quantize(
        tiny_llama,
        "W2A16G32",
        tuning=SignRoundSettings(iters=12, batch_size=4),
        calibration=calibration,
        progress=False,
    )
    assert [r.name for r in qm.reports] == ["model.layers.0", "model.layers.1"]
    for report in qm.reports:
        assert report.tuned_loss < report.rtn_loss, report
    dense = load_dense(save(qm, tmp_path / "ckpt")).state_dict()
    for name, param in qm.model.state_dict().items():
        assert torch.equal(dense[name], param), name


def test_the_untrained_wrapper_is_exactly_rtn(tiny_llama) -> None:
    linear = tiny_llama.model.layers[0].mlp.down_proj
    tuned = TunedLinear(linear, W4G32, tune_minmax=True)
    expected, _ = quantize_weight(linear.weight.detach(), W4G32)
    assert torch.equal(tuned.qdq_weight(), expected)


def test_tuned_weights_are_on_the_quantization_grid(tiny_llama_bf16, calibration) -> None:
    qm = quantize(
        tiny_llama_bf16,
        W4G32,
        tuning=SignRoundSettings(iters=4, batch_size=4),
        calibration=calibration,
        progress=False,
    )
    name = "model.layers.1.self_attn.o_proj"
    weight = qm.model.get_submodule(name).weight.detach()
    quant = qm.layers[name]
    from autoround.layer_quant import dequantize_codes

    assert torch.equal(dequantize_codes(codes_of(weight, quant), quant, torch.bfloat16), weight)
    assert qm.model.get_submodule(name).weight.dtype == torch.bfloat16


@pytest.mark.parametrize("native", [False, True], ids=["avx2-like", "native-bf16"])
def test_settings_recorded_in_the_checkpoint_leave_out_intels_defaults(
    tiny_llama, calibration, monkeypatch, native
) -> None:
    monkeypatch.setattr(hardware, "native_bf16", lambda device: native)
    qm = quantize(
        tiny_llama,
        W4G32,
        tuning=SignRoundSettings(iters=3, batch_size=4, lr=0.01),
        calibration=calibration,
        progress=False,
    )
    # amp records what tuning did: bf16 autocast only where the device has native bf16
    assert qm.settings == {
        "amp": native,
        "batch_size": 4,
        "iters": 3,
        "nsamples": 8,
        "seqlen": 32,
        "lr": 0.01,
    }


def _output_dtypes_of_mlp(block: torch.nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    block.mlp.register_forward_hook(lambda _m, _a, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize(
    ("amp", "native", "expected"),
    [(True, True, torch.bfloat16), (True, False, torch.float32), (False, True, torch.float32)],
    ids=["amp-native", "amp-without-native-bf16", "amp-off"],
)
def test_amp_multiplies_in_bf16_only_where_the_device_has_native_bf16(
    tiny_llama, calibration, monkeypatch, amp, native, expected
) -> None:
    from autoround.modeling.capture import capture_block_inputs

    monkeypatch.setattr(hardware, "native_bf16", lambda device: native)
    block = tiny_llama.model.layers[0]
    captured = capture_block_inputs(tiny_llama, block, calibration, torch.device("cpu"), progress=False)
    seen = _output_dtypes_of_mlp(block)
    settings = SignRoundSettings(iters=2, batch_size=4, amp=amp)
    result = signround.tune_block(
        block, captured.hidden, captured.hidden + 0.01, captured.kwargs, {"mlp.up_proj": W4G32}, settings
    )
    assert set(seen) == {expected}
    assert result.params["mlp.up_proj"].v.dtype == torch.float32


def test_amp_without_native_bf16_tunes_exactly_as_float32(make_llama, calibration, monkeypatch) -> None:
    monkeypatch.setattr(hardware, "native_bf16", lambda device: False)
    runs = [
        quantize(
            make_llama(),
            W4G32,
            tuning=SignRoundSettings(iters=3, batch_size=4, amp=amp),
            calibration=calibration,
            progress=False,
        )
        for amp in (True, False)
    ]
    for name, param in runs[0].model.state_dict().items():
        assert torch.equal(param, runs[1].model.state_dict()[name]), name


def test_bf16_autocast_tuning_still_beats_rtn_on_every_block(tiny_llama, calibration, monkeypatch) -> None:
    monkeypatch.setattr(hardware, "native_bf16", lambda device: True)
    qm = quantize(
        tiny_llama,
        "W2A16G32",
        tuning=SignRoundSettings(iters=12, batch_size=4, amp=True),
        calibration=calibration,
        progress=False,
    )
    assert qm.settings["amp"] is True
    for report in qm.reports:
        assert report.tuned_loss < report.rtn_loss, report


@pytest.mark.parametrize("alg_ext", [False, True], ids=["classic", "from-searched-scale"])
def test_a_non_finite_loss_keeps_rtn_for_that_block_and_warns(
    tiny_llama, calibration, monkeypatch, caplog, alg_ext
) -> None:
    import autoround.algorithms.signround as signround

    monkeypatch.setattr(signround.F, "mse_loss", lambda a, b: (a - b).pow(2).mean() * float("nan"))
    original = tiny_llama.model.layers[0].mlp.up_proj.weight.detach().clone()
    with caplog.at_level(logging.WARNING):
        qm = quantize(
            tiny_llama,
            W4G32,
            tuning=SignRoundSettings(iters=2, batch_size=4, enable_alg_ext=alg_ext),
            calibration=calibration,
            progress=False,
        )
    assert all(r.fell_back_to_rtn for r in qm.reports)
    assert "model.layers.0: loss became inf" in caplog.text
    rtn, _ = quantize_weight(original, W4G32)
    assert torch.equal(tiny_llama.model.layers[0].mlp.up_proj.weight, rtn)


def test_keep_best_false_keeps_the_last_iteration(tiny_llama, calibration) -> None:
    qm = quantize(
        tiny_llama,
        W4G32,
        tuning=SignRoundSettings(iters=5, batch_size=4, keep_best=False),
        calibration=calibration,
        progress=False,
    )
    assert all(r.best_iter == 4 for r in qm.reports)


def test_sign_steps_move_offsets_by_the_decayed_learning_rate(tiny_llama, calibration) -> None:
    from autoround.algorithms.signround import tune_block
    from autoround.modeling.capture import capture_block_inputs

    block = tiny_llama.model.layers[0]
    captured = capture_block_inputs(tiny_llama, block, calibration, torch.device("cpu"), progress=False)
    targets = captured.hidden + 0.01
    settings = SignRoundSettings(
        iters=2, batch_size=8, keep_best=False, enable_minmax_tuning=False, init_clipping="minmax"
    )
    result = tune_block(block, captured.hidden, targets, captured.kwargs, {"mlp.up_proj": W4G32}, settings)
    v = result.params["mlp.up_proj"].v
    steps = {round(x, 6) for x in v.unique().tolist()}
    # two steps of lr 1/2 then 1/2 * (1 - 1/2): every offset is a sum of +-0.5 and +-0.25 (or 0)
    assert steps <= {-0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75}
    assert torch.all(result.params["mlp.up_proj"].min_scale == 1)


@pytest.mark.parametrize(("minmax_lr", "step"), [(None, 0.25), (0.5, 0.5)], ids=["default", "explicit"])
def test_the_factor_on_a_searched_scale_steps_at_a_quarter_of_the_rounding_lr(
    tiny_llama, calibration, minmax_lr, step
) -> None:
    from autoround.algorithms.signround import tune_block
    from autoround.modeling.capture import capture_block_inputs

    block = tiny_llama.model.layers[0]
    captured = capture_block_inputs(tiny_llama, block, calibration, torch.device("cpu"), progress=False)
    # one iteration: lr = 1 / iters = 1, no decay yet; the factor starts at 1
    settings = SignRoundSettings(iters=1, batch_size=8, keep_best=False, minmax_lr=minmax_lr)
    result = tune_block(
        block, captured.hidden, captured.hidden + 0.01, captured.kwargs, {"mlp.up_proj": W4G32}, settings
    )
    factors = {round(x, 6) for x in result.params["mlp.up_proj"].max_scale.unique().tolist()}
    assert factors <= {1 - step, 1.0, 1 + step} and len(factors) > 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("iters", 0, "iters must be an integer >= 1"),
        ("batch_size", -1, "batch_size must be"),
        ("lr", 0.0, r"lr must be in \(0, 10\]"),
        ("iters", 10**7, "absurd"),
    ],
)
def test_bad_settings_are_named(field, value, message) -> None:
    with pytest.raises(ValueError, match=message):
        SignRoundSettings(**{field: value})


def test_learning_rate_defaults_follow_intel() -> None:
    assert SignRoundSettings(iters=200).lr_for(4) == 1 / 200
    assert SignRoundSettings(iters=1000).lr_for(2) == 2 / 1000
    assert SignRoundSettings(iters=1000).lr_for(4) == 1 / 1000
    assert SignRoundSettings(iters=50, lr=5e-3).minmax_lr_for(4) == 5e-3


def test_signround_without_calibration_is_refused(tiny_llama) -> None:
    with pytest.raises(ValueError, match="calibration token ids"):
        quantize(tiny_llama, W4G32, iters=5)


def test_moe_experts_are_all_tuned_and_the_router_stays_16_bit(tmp_path, tiny_qwen3_moe, calibration) -> None:
    qm = quantize(
        tiny_qwen3_moe,
        W4G32,
        tuning=SignRoundSettings(iters=20, batch_size=4),
        calibration=calibration,
        progress=False,
    )
    experts = [n for n in qm.layers if ".mlp.experts." in n]
    assert len(experts) == 2 * 4 * 3  # blocks x experts x (gate, up, down)
    assert not any(n.endswith("mlp.gate") for n in qm.layers)
    for report in qm.reports:
        assert report.tuned_loss < report.rtn_loss, report
    dense = load_dense(save(qm, tmp_path / "moe")).state_dict()
    for name, param in qm.model.state_dict().items():
        assert torch.equal(dense[name], param), name


def test_low_gpu_mem_usage_changes_where_activations_live_not_the_result(make_llama, calibration) -> None:
    settings = SignRoundSettings(iters=3, batch_size=4)
    plain = quantize(make_llama(), W4G32, tuning=settings, calibration=calibration, progress=False)
    frugal = quantize(
        make_llama(), W4G32, tuning=settings, calibration=calibration, progress=False, low_gpu_mem_usage=True
    )
    for name, param in plain.model.state_dict().items():
        assert torch.equal(frugal.model.state_dict()[name], param), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tuning_on_cuda_with_activations_on_the_cpu_lowers_every_block_loss(make_llama, calibration) -> None:
    qm = quantize(
        make_llama(),
        W4G32,
        tuning=SignRoundSettings(iters=12, batch_size=4),
        calibration=calibration,
        device="cuda",
        low_gpu_mem_usage=True,
        progress=False,
    )
    assert all(r.tuned_loss < r.rtn_loss for r in qm.reports)
    assert next(qm.model.parameters()).device.type == "cpu"
    # Intel's default amp: bf16 autocast on a GPU that has bf16
    assert qm.settings["amp"] is torch.cuda.is_bf16_supported()
