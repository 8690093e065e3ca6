"""Calibrated activation kinds (static FP8 per tensor, NVFP4 with a calibrated global scale):
which schemes select them, and their quantize-dequantize, scales and tuning gradients bit for
bit Intel 0.16.1's (tests/fixtures/intel/act_static.safetensors, made by
scripts/intel/make_act_static_fixture.py in Intel's venv)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from autoround.dtypes.act_formulas import (
    fp8_static_input_scale,
    nvfp4_input_global_scale,
    qdq_fp8_static,
    qdq_nvfp4_static,
)
from autoround.dtypes.act_kinds import ACT_KINDS
from autoround.dtypes.activations import (
    BUILT_WORDS,
    activation_kind,
    activation_problem,
    calibrated_entry,
    qdq_activation,
)
from autoround.dtypes.ste import straight_through
from autoround.schemes import PRESETS, Scheme, parse_scheme

FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel" / "act_static.safetensors"
DTYPES = ("float32", "bfloat16")
CASES = ("self", "clip", "wide")
FACTORS = {"f100": 1.0, "f060": 0.6}
NV_WIDTHS = (64, 40, 8)


@pytest.fixture(scope="module")
def intel() -> dict[str, torch.Tensor]:
    with safe_open(str(FIXTURE), "pt") as handle:
        assert handle.metadata()["auto_round"] == "0.16.1"
    return load_file(FIXTURE)


def test_the_presets_select_the_calibrated_kinds() -> None:
    assert activation_kind(PRESETS["FP8_STATIC"]) == "fp8_static"
    assert activation_kind(PRESETS["NVFP4"]) == "nvfp4"
    # Intel calibrates a type named static whatever act_dynamic says
    assert activation_kind(parse_scheme("NVFP4", act_dynamic=False)) == "nvfp4"
    assert calibrated_entry(PRESETS["FP8_STATIC"]) is ACT_KINDS["fp8_static"]
    assert calibrated_entry(PRESETS["INT8_W8A8"]) is None and calibrated_entry(PRESETS["W4A16"]) is None
    assert ACT_KINDS["fp8_static"].tunes_range and not ACT_KINDS["nvfp4"].tunes_range
    assert "act_group_size=0 (per tensor)" in BUILT_WORDS and "'nv_fp4_with_static_gs'" in BUILT_WORDS


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        (
            parse_scheme("FP8_STATIC", act_group_size=-1),
            r"act_group_size=-1 \(per token\) is not built for calibrated fp",
        ),
        (
            parse_scheme("FP8_STATIC", group_size=128),
            r"FP8 per-channel weights .*not fp 8-bit group_size=128",
        ),
        (
            parse_scheme("NVFP4", act_group_size=32),
            r"act_group_size=32 \(per group\).*act_group_size=16 \(NVFP4 blocks\)",
        ),
        (parse_scheme("FP8_STATIC", act_bits=4), r"act_bits=4 is not built; act_bits=8"),
        (parse_scheme("FP8_STATIC", act_sym=False), r"act_sym=False"),
        (parse_scheme("MXFP4", act_dynamic=False), r"act_data_type='mx_fp' have no calibrated kind"),
    ],
)
def test_what_no_calibrated_kind_builds_is_refused_naming_the_field(scheme: Scheme, message: str) -> None:
    problem = activation_problem(scheme)
    assert problem is not None and re.search(message, problem), problem


def test_a_calibrated_kind_needs_its_range_and_a_dynamic_one_takes_none() -> None:
    x = torch.randn(3, 32)
    with pytest.raises(ValueError, match="calibrated range: pass absmax="):
        qdq_activation(x, "fp8_static")
    with pytest.raises(ValueError, match="'fp8' is dynamic"):
        qdq_activation(x, "fp8", absmax=torch.tensor(1.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("factor", list(FACTORS))
def test_static_fp8_values_scale_and_gradients_are_intels(intel, dtype: str, case: str, factor: str) -> None:
    key = f"fp8.{dtype}.{case}.{factor}"
    absmax = intel[f"{key}.act_max"].reshape(())
    x = intel[f"in.{dtype}"].clone().requires_grad_(True)
    range_factor = torch.full((1,), FACTORS[factor], requires_grad=True)
    qdq, scale = qdq_fp8_static(x, absmax, range_factor, straight_through)
    assert qdq.dtype == x.dtype
    assert torch.equal(qdq, intel[f"{key}.qdq"])
    assert torch.equal(scale.reshape(1), intel[f"{key}.scale"])
    (qdq.to(torch.float32) * intel[f"{key}.g"].to(torch.float32)).sum().backward()
    assert x.grad is not None and range_factor.grad is not None
    assert torch.equal(x.grad, intel[f"{key}.grad_x"])
    assert torch.equal(range_factor.grad, intel[f"{key}.grad_factor"])
    # what a checkpoint stores (input_scale) is that scale, of the range times the factor
    scaled = absmax * torch.tensor(FACTORS[factor])
    assert torch.equal(fp8_static_input_scale(scaled).reshape(1), intel[f"{key}.scale"])
    # the in-memory kind (no factor) on the scaled range gives the same values
    assert torch.equal(qdq_activation(x.detach(), "fp8_static", absmax=scaled), intel[f"{key}.qdq"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_static_fp8_round_to_nearest_is_intels_and_clips_beyond_the_range(
    intel, dtype: str, case: str
) -> None:
    x, absmax = intel[f"in.{dtype}"], intel[f"fp8.{dtype}.{case}.f100.act_max"].reshape(())
    qdq = qdq_activation(x, "fp8_static", absmax=absmax)
    assert torch.equal(qdq, intel[f"fp8_rtn.{dtype}.{case}.qdq"])
    # a plain-torch reading: nothing beyond +-absmax (448 * scale) comes out
    assert qdq.to(torch.float32).abs().max() <= fp8_static_input_scale(absmax) * 448


def test_the_self_ranged_form_is_the_range_of_x_itself(intel) -> None:
    x = intel["in.float32"]
    qdq, scale = ACT_KINDS["fp8_static"].qdq(x, 0)
    assert torch.equal(qdq, intel["fp8.float32.self.f100.qdq"])
    assert torch.equal(scale.reshape(1), intel["fp8.float32.self.f100.scale"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", NV_WIDTHS)
@pytest.mark.parametrize("case", CASES)
def test_nvfp4_activations_with_a_calibrated_global_scale_are_intels(
    intel, dtype: str, width: int, case: str
) -> None:
    key = f"nv.{dtype}.{width}.{case}"
    x, absmax = intel[f"in.{dtype}.{width}"], intel[f"{key}.act_max"].reshape(())
    qdq, scale = qdq_nvfp4_static(x, absmax)
    assert qdq.dtype == x.dtype
    assert torch.equal(qdq, intel[f"{key}.qdq"])
    # Intel's round-to-nearest function computes the same values in place
    assert torch.equal(intel[f"{key}.rtn_qdq"], intel[f"{key}.qdq"])
    assert torch.equal(nvfp4_input_global_scale(absmax).reshape(1), intel[f"{key}.global_scale"])
    # Intel returns the E4M3 block scales; ours are the effective ones, scale / global scale
    block, gs = intel[f"{key}.scale"], intel[f"{key}.global_scale"]
    assert scale.shape == block.shape
    assert torch.allclose(scale, block / gs, rtol=1e-6, atol=0)
    assert torch.equal(qdq_activation(x, "nvfp4", absmax=absmax), intel[f"{key}.qdq"])
