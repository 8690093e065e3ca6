"""Dynamic per-token activation quantize-dequantize (W8A8): bit for bit Intel 0.16.1's
(tests/fixtures/intel/act_qdq.safetensors, scripts/intel/make_act_fixture.py), and how it
relates to compressed-tensors' own dynamic per-token quantization of the same input: the same
grid for the same scale, the scales differing as the module docstring says.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from autoround.dtypes.activations import (
    FP8_SCALE_FLOOR,
    activation_kind,
    qdq_activation,
    qdq_fp8_per_token,
    qdq_int_per_token,
)
from autoround.schemes import PRESETS, parse_scheme

FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel" / "act_qdq.safetensors"
DTYPES = ("float32", "bfloat16", "float16")
FUNCTIONS = {"int8": qdq_int_per_token, "fp8": qdq_fp8_per_token}
CT_PRESETS = {"int8": "W8A8", "fp8": "FP8_DYNAMIC"}


@pytest.fixture(scope="module")
def intel() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits (so -0.0 and NaN payloads count)."""
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_activation_qdq_is_intels_bit_for_bit(intel, kind: str, dtype: str) -> None:
    x = intel[f"in.{dtype}"]
    qdq, scale = FUNCTIONS[kind](x)
    expected = intel[f"{kind}.{dtype}.qdq"]
    assert qdq.dtype == expected.dtype and qdq.shape == x.shape
    assert torch.equal(_bits(qdq), _bits(expected))
    assert torch.equal(_bits(scale), _bits(intel[f"{kind}.{dtype}.scale"]))
    assert torch.equal(qdq_activation(x, kind), qdq)  # type: ignore[arg-type]


def test_int8_uses_the_full_signed_range_with_a_float16_scale(intel) -> None:
    x = intel["in.float32"].reshape(-1, 64)
    qdq, scale = qdq_int_per_token(x)
    absmax = x.abs().amax(-1, keepdim=True)
    keep = absmax[:, 0] > 1e-3  # tokens whose scale is above the 1e-5 floor
    assert scale.dtype == torch.float16
    assert torch.equal(scale.abs()[keep], (absmax / 128).to(torch.float16)[keep])
    codes = (x / scale).round().clamp(-128, 127)
    assert torch.equal(qdq, codes * scale)
    # the largest magnitude lands on -128 (the scale's sign is opposite to its); a value of the
    # other sign within 1/256 of it would round to +128 and is clamped to 127
    assert (codes[keep].amin(-1) == -128).all()


def _ct(x: torch.Tensor, kind: str, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """compressed-tensors' dynamic per-token quantize-dequantize of ``x`` (its own scale, or
    ``scale``), as its ``forward_quantize`` computes it for input activations."""
    from compressed_tensors.quantization import preset_name_to_scheme
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils.helpers import compute_dynamic_scales_and_zp

    args = preset_name_to_scheme(CT_PRESETS[kind], ["Linear"]).input_activations
    own, zero = compute_dynamic_scales_and_zp(value=x, args=args, module=torch.nn.Linear(1, 1))
    used = own if scale is None else scale.reshape(own.shape)
    return fake_quantize(x, used, zero, args), own


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_compressed_tensors_has_the_same_grid_for_the_same_scale(intel, kind: str, dtype: str) -> None:
    x = intel[f"in.{dtype}"]  # (batch, tokens, features): compressed-tensors' token layout
    ours, scale = FUNCTIONS[kind](x)
    # our scale in float32 (exact): compressed-tensors computes in the scale's dtype, and ours
    # in float32 for float32 and bfloat16 inputs
    theirs, _ = _ct(x, kind, scale.float())
    assert torch.equal(theirs.to(x.dtype), ours)


@pytest.mark.parametrize("kind", list(FUNCTIONS))
def test_compressed_tensors_scales_differ_as_documented(intel, kind: str) -> None:
    x = intel["in.float32"]
    _, ours = FUNCTIONS[kind](x)
    _, theirs = _ct(x, kind)
    absmax = x.abs().amax(-1, keepdim=True)
    nonzero = absmax > 0
    if kind == "int8":  # absmax / 127.5 in the input's dtype; Intel: ±absmax / 128 in float16
        assert torch.equal(theirs[nonzero], (absmax / 127.5)[nonzero])
        assert not torch.equal(theirs.flatten(), ours.float().abs().flatten())
    else:  # both absmax / 448 in float32; Intel (and vLLM) floor it at 1 / (448 * 512)
        big = (absmax / 448 >= FP8_SCALE_FLOOR).flatten()
        assert torch.equal(theirs.flatten()[big], ours.flatten()[big])
        assert (ours.flatten()[~big] == FP8_SCALE_FLOOR).all()
        assert (theirs.flatten()[~big] < FP8_SCALE_FLOOR).all()


def test_compressed_tensors_token_strategy_needs_a_batch_dimension(intel) -> None:
    """Its ``token`` strategy keeps dimensions 0 and 1: a 2-D (tokens, features) input gets one
    scale for the whole tensor. Ours (and Intel's, and vLLM's) is per row for any rank."""
    x = intel["in.float32"].reshape(-1, 64)
    _, theirs = _ct(x, "int8")
    assert theirs.numel() == 1
    assert qdq_int_per_token(x)[1].shape == (10, 1)


def test_the_built_activation_kinds() -> None:
    assert activation_kind(PRESETS["INT8_W8A8"]) == activation_kind(PRESETS["INT8"]) == "int8"
    assert activation_kind(parse_scheme("FP8_STATIC", act_dynamic=True, act_group_size=-1)) == "fp8"
    assert activation_kind(PRESETS["W4A16"]) is None
    # static: a calibrated kind (tests/core/dtypes/test_act_static.py)
    assert activation_kind(PRESETS["FP8_STATIC"]) == "fp8_static"


@pytest.mark.parametrize("dtype", DTYPES)
def test_four_bit_int_activations_are_intels_bit_for_bit(intel, dtype: str) -> None:
    # Intel's INT4 preset (W4A4): the same per-token rtn_int_sym at 4 bits, codes -8..7
    x = intel[f"in.{dtype}"]
    qdq, scale = qdq_int_per_token(x, 4)
    assert torch.equal(_bits(qdq), _bits(intel[f"int4.{dtype}.qdq"]))
    assert torch.equal(_bits(scale), _bits(intel[f"int4.{dtype}.scale"]))
    assert activation_kind(PRESETS["INT4"]) == "int4"
    assert torch.equal(qdq_activation(x, "int4"), qdq)


def test_four_bit_int_activations_use_sixteen_codes_with_a_float16_scale(intel) -> None:
    x = intel["in.float32"].reshape(-1, 64)
    qdq, scale = qdq_int_per_token(x, 4)
    absmax = x.abs().amax(-1, keepdim=True)
    keep = absmax[:, 0] > 1e-3
    assert torch.equal(scale.abs()[keep], (absmax / 8).to(torch.float16)[keep])
    codes = (x / scale).round().clamp(-8, 7)
    assert torch.equal(qdq, codes * scale)
    assert codes.unique().numel() <= 16


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"bits": 8}, "int 4-bit activations go with int 4-bit symmetric per-channel weights"),
        ({"group_size": 128}, "group_size=128"),
        ({"act_bits": 6}, "act_bits=6 is not built; act_bits=8/4"),
    ],
)
def test_four_bit_int_activations_refuse_other_weights_naming_the_field(overrides: dict, words: str) -> None:
    with pytest.raises(NotImplementedError, match=re.escape(words)):
        activation_kind(parse_scheme("INT4", **overrides))
