"""Grouped dynamic activation quantize-dequantize (MX per block of 32, FP8 per group): bit for bit
Intel 0.16.1's (tests/fixtures/intel/act_qdq_mx.safetensors, scripts/intel/make_act_mx_fixture.py),
the registry's rules (which scheme selects which kind, and the refusals naming the field), and the
MX scale against compressed-tensors' own E8M0 conversion.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from autoround.dtypes.act_kinds import ACT_KINDS
from autoround.dtypes.activations import (
    BUILT_WORDS,
    activation_kind,
    activation_problem,
    qdq_activation,
    qdq_groups,
)
from autoround.schemes import PRESETS, Scheme, parse_scheme

FIXTURE = Path(__file__).parents[2] / "fixtures" / "intel" / "act_qdq_mx.safetensors"
DTYPES = ("float32", "bfloat16", "float16")
INPUTS = ("wide", "rows")


def _fixture_kinds() -> dict[str, list[Any]]:
    with safe_open(FIXTURE, "pt") as f:
        kinds: dict[str, list[Any]] = json.loads(f.metadata()["kinds"])
    return kinds


KINDS = _fixture_kinds()


@pytest.fixture(scope="module")
def intel() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits (so -0.0 and NaN payloads count)."""
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()])


def _our_kind(case: str) -> tuple[str, int | None]:
    """The fixture case's kind name and the group size passed to ``qdq_activation``."""
    data_type, _, group = KINDS[case]
    return ("fp8_group", group) if data_type == "fp" else (case, None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("input_name", INPUTS)
@pytest.mark.parametrize("case", list(KINDS))
def test_grouped_activation_qdq_is_intels_bit_for_bit(intel, case: str, input_name: str, dtype: str) -> None:
    x = intel[f"in.{input_name}.{dtype}"]
    data_type, bits, group = KINDS[case]
    qdq, scale = qdq_groups(x, data_type, bits, group)
    expected = intel[f"{case}.{input_name}.{dtype}.qdq"]
    assert qdq.dtype == expected.dtype and qdq.shape == x.shape
    assert torch.equal(_bits(qdq), _bits(expected))
    theirs = intel[f"{case}.{input_name}.{dtype}.scale"]
    if data_type == "fp":  # float32 scales, (groups, 1)
        assert torch.equal(_bits(scale), _bits(theirs))
    else:  # Intel returns the shared exponent (in the input's dtype); ours is 2 ** exponent
        assert torch.equal(scale, torch.exp2(theirs.float()))
    kind, group_arg = _our_kind(case)
    assert torch.equal(_bits(qdq_activation(x, kind, group_arg)), _bits(expected))


def test_every_kind_is_checked_against_intel() -> None:
    covered = {"int8", "int4", "fp8"}  # tests/core/dtypes/test_activations.py (act_qdq.safetensors)
    covered |= {"fp8_static", "nvfp4"}  # tests/core/dtypes/test_act_static.py (act_static.safetensors)
    covered |= {_our_kind(case)[0] for case in KINDS}
    assert set(ACT_KINDS) == covered


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("MXFP4", "mxfp4"),
        ("MXFP8", "mxfp8"),
        ("MXFP6", "mxfp6"),
        ("MXFP4_RCEIL", "mxfp4_rceil"),
        ("MXFP8_RCEIL", "mxfp8_rceil"),
        ("MXINT4", "mxint4"),
        ("FP8_BLOCK", "fp8_group"),
        ("INT8_W8A8", "int8"),
    ],
)
def test_the_presets_select_their_kind(name: str, kind: str) -> None:
    assert activation_problem(PRESETS[name]) is None
    assert activation_kind(PRESETS[name]) == kind


def test_grouped_kinds_take_any_weights_the_weight_side_builds() -> None:
    mx_acts = {
        "act_bits": 4,
        "act_group_size": 32,
        "act_sym": True,
        "act_data_type": "mx_fp",
        "act_dynamic": True,
    }
    assert activation_kind(Scheme(bits=4, group_size=128, **mx_acts)) == "mxfp4"
    assert (
        activation_kind(parse_scheme("W4A16", act_bits=8, act_data_type="fp", act_group_size=64))
        == "fp8_group"
    )


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        (
            parse_scheme("NVFP4", act_data_type="nv_fp"),
            r"act_data_type='nv_fp' \(NVFP4 activations with a global scale from each input\) is not "
            r"built; act_data_type='nv_fp4_with_static_gs'",
        ),
        (
            parse_scheme("MXFP4", act_sym=False),
            r"act_sym=False \(asymmetric activations\) is not built; act_sym=True",
        ),
        (parse_scheme("MXFP4", act_dynamic=False), r"act_dynamic=False.*calibrated.*use act_dynamic=True"),
        (
            parse_scheme("MXFP4", act_group_size=16),
            r"act_group_size=16 \(per group\) is not built for dynamic mx_fp 4-bit activations; "
            r"act_group_size=32 \(MX blocks\)",
        ),
        (
            parse_scheme("MXINT4", act_bits=6),
            r"act_bits=6 is not built; act_bits=4/8 for act_data_type='mx_int'",
        ),
        (
            parse_scheme("FP8_STATIC", act_dynamic=True),
            r"act_group_size=0 \(per tensor\) is not built for dynamic fp 8-bit activations; "
            r"act_group_size=-1 \(per token\) or act_group_size>0 \(per group",
        ),
        (
            parse_scheme("INT8_W8A8", act_group_size=128),
            r"act_group_size=128 \(per group\).*act_group_size=-1",
        ),
    ],
)
def test_what_no_kind_builds_is_refused_naming_the_field(scheme: Scheme, message: str) -> None:
    problem = activation_problem(scheme)
    assert problem is not None
    assert re.search(message, problem), problem
    with pytest.raises(NotImplementedError, match=message):
        activation_kind(scheme)


def test_built_words_name_every_activation_data_type() -> None:
    for entry in ACT_KINDS.values():
        assert f"act_data_type={entry.data_type!r}" in BUILT_WORDS
    assert "act_group_size=32 (MX blocks)" in BUILT_WORDS


def test_a_per_group_kind_needs_its_group_size() -> None:
    with pytest.raises(ValueError, match=r"'fp8_group' needs its act_group_size"):
        qdq_activation(torch.ones(2, 128), "fp8_group")


def test_mx_scales_follow_their_rules_and_compressed_tensors_rounds_up_from_1_75(intel) -> None:
    """A block's maximum lands in the element format's top binade ([4, 8) times the scale for
    E2M1: floor) or at most at its largest value (6: rceil); compressed-tensors' own exponent
    (``generate_mx_scales``, what a runtime computes from its arguments) is the floor one, one
    higher where the maximum's mantissa is 1.75 or more (it rounds the maximum to a power of
    two first)."""
    from compressed_tensors.quantization.utils.mxfp_utils import generate_mx_scales

    x = intel["in.wide.float32"]
    amax = x.reshape(-1, 32).abs().amax(-1, keepdim=True)
    nonzero = amax > 0
    _, floor_scale = qdq_groups(x, "mx_fp", 4, 32)
    _, rceil_scale = qdq_groups(x, "mx_fp_rceil", 4, 32)
    assert ((amax / floor_scale >= 4) & (amax / floor_scale < 8))[nonzero].all()
    assert ((amax / rceil_scale <= 6) & (amax / rceil_scale > 3))[nonzero].all()
    mantissa = amax / torch.exp2(torch.floor(torch.log2(amax)))
    expected = torch.log2(floor_scale) + 127 + (mantissa >= 1.75).float()
    theirs = generate_mx_scales(amax, num_bits=4)
    assert torch.equal(theirs[nonzero], expected[nonzero])
    assert (mantissa[nonzero] >= 1.75).any() and (mantissa[nonzero] < 1.75).any()  # both cases seen


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("MXFP4", "MXFP4"),
        ("MXFP8", "MXFP8"),
        ("MXFP4_RCEIL", "MXFP4"),
        ("MXFP8_RCEIL", "MXFP8"),
        ("FP8_BLOCK", "FP8_BLOCK"),
    ],
)
def test_llm_compressor_writes_compressed_tensors_own_activation_arguments(ours: str, theirs: str) -> None:
    from compressed_tensors.quantization import preset_name_to_scheme

    from autoround.formats.compressed_tensors import activation_args

    expected = preset_name_to_scheme(theirs, ["Linear"]).input_activations.model_dump(mode="json")
    assert activation_args(PRESETS[ours]) == expected


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        (
            PRESETS["MXINT4"],
            r"activation quantization \(act_bits=4.*not built for format\(s\) \['llm_compressor'\]",
        ),
        (
            parse_scheme("W4A16", act_bits=4, act_data_type="mx_fp", act_group_size=32),
            r"mxfp4 activations with int 4-bit",
        ),
        (
            parse_scheme("W4A16", act_bits=8, act_data_type="fp", act_group_size=128),
            r"fp8 per-group activations with int",
        ),
    ],
)
def test_llm_compressor_refuses_activations_without_a_compressed_tensors_preset(
    scheme: Scheme, message: str
) -> None:
    from autoround.formats.preflight import check_schemes

    with pytest.raises((NotImplementedError, ValueError), match=message):
        check_schemes(scheme, None, "llm_compressor")
