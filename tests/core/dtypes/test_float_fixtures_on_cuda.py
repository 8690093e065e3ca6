"""Intel 0.16.1's float fixtures, computed on a CUDA device (issue 20).

The same fixtures the CPU tests read (tests/core/dtypes/test_float_tuning.py,
test_activations.py, test_activations_mx.py, test_act_static.py): Intel's values, made on the
CPU in its venv, are what our functions give for the inputs moved to the GPU, bit for bit; the
tuning gradients agree within float32 rounding (the GPU sums the per-group factor gradients in
another order), the rounding offsets' gradients with Intel's signs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from autoround.dtypes import DTYPES, from_groups, to_groups
from autoround.dtypes.activations import qdq_activation

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

INTEL = Path(__file__).parents[2] / "fixtures" / "intel"


def _cases(name: str, key: str) -> list:
    with safe_open(INTEL / name, "pt") as handle:
        return json.loads(handle.metadata()[key])


TUNING_CASES = _cases("float_tuning_qdq.safetensors", "cases")
MX_ACT_KINDS: dict[str, list] = dict(_cases("act_qdq_mx.safetensors", "kinds"))


@pytest.fixture(scope="module")
def tuning() -> dict[str, torch.Tensor]:
    return load_file(INTEL / "float_tuning_qdq.safetensors", device="cuda")


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits (so -0.0 counts)."""
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()])


@pytest.mark.parametrize("case", TUNING_CASES, ids=lambda c: c["id"])
def test_the_float_tuning_step_on_cuda_gives_intels_values_and_gradients(tuning, case: dict) -> None:
    dtype = DTYPES[case["data_type"]]
    grouped, layout = to_groups(tuning[f"in.{case['dtype']}"], case["group_size"])
    v = tuning[f"{case['case']}.v"].clone().requires_grad_(True)
    factor = tuning[f"{case['case']}.max_scale"].clone().requires_grad_(True)
    bits = case["bits"]
    if case["searched"]:
        init = tuning[f"{case['case']}.init_scale"]
        tuned = dtype.scaled_tuning_qdq(grouped, bits, init, factor, v)
    else:
        ones = torch.ones_like(factor)
        tuned = dtype.tuning_qdq(grouped, dtype.group_range(grouped), bits, True, v, ones, factor)
    tuned = from_groups(tuned, layout)
    expected = tuning[f"{case['id']}.qdq"]
    assert tuned.device.type == "cuda" and tuned.dtype == expected.dtype
    assert torch.equal(_bits(tuned), _bits(expected))

    (tuned.float() * tuning["upstream"]).sum().backward()
    assert v.grad is not None and factor.grad is not None
    for ours, name in ((v.grad, "grad_v"), (factor.grad, "grad_max_scale")):
        intel = tuning[f"{case['id']}.{name}"]
        finite = torch.isfinite(intel)  # Intel's NaN (an all-zero MX group) is 0 here
        assert torch.isfinite(ours).all()
        scale = float(intel[finite].abs().max())
        torch.testing.assert_close(ours[finite], intel[finite], rtol=2e-6, atol=2e-6 * scale, msg=name)
    assert torch.equal(torch.sign(v.grad), torch.sign(tuning[f"{case['id']}.grad_v"].nan_to_num()))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_per_token_activations_on_cuda_are_intels(kind: str, dtype: str) -> None:
    intel = load_file(INTEL / "act_qdq.safetensors")
    qdq = qdq_activation(intel[f"in.{dtype}"].cuda(), kind)  # type: ignore[arg-type]
    assert torch.equal(_bits(qdq.cpu()), _bits(intel[f"{kind}.{dtype}.qdq"]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("input_name", ["wide", "rows"])
@pytest.mark.parametrize("case", list(MX_ACT_KINDS))
def test_grouped_activations_on_cuda_are_intels(case: str, input_name: str, dtype: str) -> None:
    intel = load_file(INTEL / "act_qdq_mx.safetensors")
    data_type, _, group = MX_ACT_KINDS[case]
    kind, group_arg = ("fp8_group", group) if data_type == "fp" else (case, None)
    qdq = qdq_activation(intel[f"in.{input_name}.{dtype}"].cuda(), kind, group_arg)  # type: ignore[arg-type]
    assert torch.equal(_bits(qdq.cpu()), _bits(intel[f"{case}.{input_name}.{dtype}.qdq"]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", ["self", "clip", "wide"])
def test_calibrated_activations_on_cuda_are_intels(dtype: str, case: str) -> None:
    intel = load_file(INTEL / "act_static.safetensors")
    x, absmax = intel[f"in.{dtype}"].cuda(), intel[f"fp8.{dtype}.{case}.f100.act_max"].reshape(()).cuda()
    fp8 = qdq_activation(x, "fp8_static", absmax=absmax)
    assert torch.equal(fp8.cpu(), intel[f"fp8_rtn.{dtype}.{case}.qdq"])
    for width in (64, 40, 8):
        key = f"nv.{dtype}.{width}.{case}"
        x, absmax = intel[f"in.{dtype}.{width}"].cuda(), intel[f"{key}.act_max"].reshape(()).cuda()
        assert torch.equal(qdq_activation(x, "nvfp4", absmax=absmax).cpu(), intel[f"{key}.qdq"]), key
