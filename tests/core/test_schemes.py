"""Schemes are validated data; presets follow Intel auto-round's names and values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import autoround
from autoround.errors import SchemeError
from autoround.formats import spec_for
from autoround.formats.preflight import check_schemes
from autoround.schemes import PRESETS, Scheme, parse_scheme, require_weight_only

#: Intel 0.16.1's PRESET_SCHEMES, every field (scripts/intel/make_preset_fixture.py).
INTEL = json.loads((Path(__file__).parents[1] / "fixtures" / "intel" / "presets.json").read_text())
INTEL_PRESETS: dict[str, dict[str, Any]] = INTEL["presets"]
assert INTEL["auto_round_version"] == "0.16.1"
#: Intel presets we do not have, and why: a data type not built, a name Intel's model-specific
#: layer rules key on. (GGUF presets are compared in the gguf tests: Intel's data_type names
#: there are its internal functions', ours the block families.)
NOT_OURS = {"NVFP4_E5M3": "data type nvfp4_v2 not built", "W4A16_MIXED": "Intel's model-specific name"}
COMPARED = sorted(n for n in INTEL_PRESETS if not n.startswith("GGUF:") and n not in NOT_OURS)


@pytest.mark.parametrize(
    ("name", "bits", "group"),
    [
        ("W2A16", 2, 128),
        ("W2A16G32", 2, 32),
        ("W2A16G64", 2, 64),
        ("W3A16", 3, 128),
        ("W4A16", 4, 128),
        ("W8A16", 8, 128),
    ],
)
def test_presets_have_intels_values(name: str, bits: int, group: int) -> None:
    scheme = PRESETS[name]
    assert (scheme.bits, scheme.group_size, scheme.sym, scheme.data_type) == (bits, group, True, "int")


def test_every_preset_parses_case_insensitively() -> None:
    for name in PRESETS:
        assert parse_scheme(name.lower()) == PRESETS[name]


def test_overrides_apply_on_top_of_a_preset_and_none_passes_through() -> None:
    scheme = parse_scheme("w4a16", bits=None, group_size=64, sym=False)
    assert (scheme.bits, scheme.group_size, scheme.sym) == (4, 64, False)


def test_unknown_preset_lists_the_valid_ones() -> None:
    with pytest.raises(SchemeError, match=r"unknown scheme 'W5A9'.*W4A16"):
        parse_scheme("W5A9")


@pytest.mark.parametrize("bits", [1, 9, 0, 32])
def test_bits_outside_2_to_8_are_refused_with_the_allowed_values(bits: int) -> None:
    with pytest.raises(SchemeError, match=rf"bits={bits} .*allowed: \[2, 3, 4, 5, 6, 7, 8\]"):
        Scheme(bits=bits)


def test_group_size_below_minus_one_is_refused() -> None:
    with pytest.raises(SchemeError, match=r"group_size=-2 is invalid"):
        Scheme(group_size=-2)


def test_unknown_data_type_lists_the_valid_ones() -> None:
    with pytest.raises(SchemeError, match=r"unknown data_type 'int5'.*'int'"):
        Scheme(data_type="int5")


def test_unknown_field_is_named() -> None:
    with pytest.raises(SchemeError, match=r"unknown scheme field\(s\) \['bitz'\]"):
        parse_scheme("W4A16", bitz=3)


def test_sixteen_bits_means_unquantized() -> None:
    assert not PRESETS["BF16"].is_quantized
    assert not Scheme(bits=16).is_quantized


def as_intel(scheme: Scheme) -> dict[str, Any]:
    """Our scheme in Intel's fields: a block's shape is Intel's (list) group_size."""
    fields = dataclasses.asdict(scheme)
    block = fields.pop("block_shape")
    if block is not None:
        fields["group_size"] = list(block)
    return fields


@pytest.mark.parametrize("name", COMPARED)
def test_every_intel_preset_has_intels_fields(name: str) -> None:
    intel = dict(INTEL_PRESETS[name])
    # Fields of Intel's QuantizationScheme that only GGUF and rotation use: unset here.
    assert [intel.pop(k) for k in ("super_bits", "super_group_size", "rotation_config")] == [None] * 3
    assert as_intel(PRESETS[name]) == intel


def test_the_float_mx_and_w8a8_presets_are_all_there() -> None:
    wanted = {"MXFP4", "MXFP4_RCEIL", "MXFP6", "MXFP8", "MXFP8_RCEIL", "MXINT4", "NVFP4", "FPW8A16"}
    wanted |= {"FP8_STATIC", "FP8_BLOCK", "INT8", "INT8_W8A8"}
    assert wanted <= set(COMPARED) <= set(PRESETS)
    assert set(NOT_OURS) <= set(INTEL_PRESETS) and not set(NOT_OURS) & set(PRESETS)


def test_fp8_block_is_a_128_by_128_tile_and_an_integer_group_size_replaces_it() -> None:
    block = PRESETS["FP8_BLOCK"]
    assert (block.block_shape, block.group_size) == ((128, 128), 128)
    per_channel = parse_scheme("FP8_BLOCK", group_size=-1)
    assert (per_channel.block_shape, per_channel.group_size) == (None, -1)
    tiles = parse_scheme("FPW8A16", group_size=(64, 32))  # Intel's tuple spelling
    assert (tiles.block_shape, tiles.group_size) == ((64, 32), 32)
    assert Scheme.from_dict({**block.to_dict(), "block_shape": [128, 128]}) == block  # from JSON
    assert Scheme.from_dict(as_intel(block)) == block


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"block_shape": (128, 128)},
            r"block_shape=\(128, 128\) is not allowed for data_type 'int'.*\['fp'\]",
        ),
        (
            {"data_type": "fp", "bits": 8, "block_shape": (128, 128), "group_size": 64},
            r"group_size=64 .*allowed: 128",
        ),
        (
            {"data_type": "fp", "bits": 8, "block_shape": (0, 128)},
            r"block_shape must be two positive integers",
        ),
        ({"group_size": (128, 128)}, r"a 2-D weight block is block_shape"),
        ({"act_bits": 5}, r"act_bits=5 is not allowed; allowed: \[4, 6, 8\]"),
        ({"act_bits": 8, "act_data_type": "int5"}, r"unknown act_data_type 'int5'.*'mx_fp_rceil'"),
        ({"act_group_size": -2}, r"act_group_size=-2 is invalid"),
        ({"act_dynamic": "yes"}, r"act_dynamic must be True, False or None"),
        (
            {"data_type": "nv_fp", "group_size": 32},
            r"group_size=32 is not allowed for data_type 'nv_fp'.*allowed: 16",
        ),
        ({"data_type": "mx_fp", "bits": 3, "group_size": 32}, r"bits=3 is not allowed for data_type 'mx_fp'"),
    ],
)
def test_combinations_no_data_type_implements_are_refused_naming_the_field(
    fields: dict, message: str
) -> None:
    with pytest.raises(SchemeError, match=message):
        Scheme(**fields)


def test_overrides_on_a_float_preset_are_validated_as_for_int_ones() -> None:
    assert parse_scheme("MXFP4", act_bits=16).is_weight_only
    assert parse_scheme("NVFP4", act_bits=16) == Scheme(
        bits=4,
        group_size=16,
        data_type="nv_fp",
        act_group_size=16,
        act_sym=True,
        act_data_type="nv_fp4_with_static_gs",
        act_dynamic=True,
    )
    with pytest.raises(SchemeError, match=r"group_size=64 is not allowed for data_type 'mx_fp'"):
        parse_scheme("MXFP8", group_size=64)
    with pytest.raises(SchemeError, match=r"bits=3 is not allowed for data_type 'mx_int'"):
        parse_scheme("MXINT4", bits=3)


@pytest.mark.parametrize("name", ["MXFP4", "NVFP4", "FP8_STATIC", "INT8_W8A8", "FP8_BLOCK"])
def test_activation_quantization_is_carried_but_refused_before_work(name: str) -> None:
    scheme = PRESETS[name]
    assert not scheme.is_weight_only and scheme.act_bits < 16
    with pytest.raises(
        NotImplementedError, match=rf"activation quantization \(act_bits={scheme.act_bits}.*act_bits=16"
    ):
        require_weight_only(scheme)


def test_fp8_weight_blocks_are_built_and_other_types_refuse_them() -> None:
    require_weight_only(parse_scheme("FP8_BLOCK", act_bits=16))  # 2-D tiles: every quantizer tiles them
    require_weight_only(parse_scheme("FP8_BLOCK", act_bits=16, group_size=-1))  # per channel
    require_weight_only(PRESETS["FPW8A16"])
    with pytest.raises(SchemeError, match=r"block_shape=\(128, 128\) is not allowed for data_type 'int'"):
        Scheme(bits=4, group_size=128, block_shape=(128, 128))


@pytest.mark.parametrize(
    ("in_features", "group", "groups"),
    [(576, 128, 5), (512, 128, 4), (96, 128, 1), (576, -1, 1), (576, 0, 1)],
)
def test_a_partial_last_group_counts_as_a_group(in_features: int, group: int, groups: int) -> None:
    assert Scheme(group_size=group).num_groups(in_features) == groups


def test_quantizing_with_activation_quantization_is_refused_before_any_weight_changes(tiny_llama) -> None:
    before = [p.detach().clone() for p in tiny_llama.parameters()]
    # NVFP4 activations with a global scale computed from each input (act_data_type="nv_fp") are
    # not built (the calibrated one, NVFP4's own, is: tests/core/algorithms/test_act_calibration.py)
    with pytest.raises(
        NotImplementedError,
        match=r"layer model\.layers\.0\..*act_bits=4.*global scale from each input.*use act_bits=16",
    ):
        autoround.quantize(tiny_llama, "NVFP4", act_data_type="nv_fp", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_llama.parameters(), strict=True))
    autoround.quantize(tiny_llama, "NVFP4", act_bits=16, progress=False)  # the weight-only form runs


def test_the_scheme_preflight_names_a_layer_config_entry_that_quantizes_activations() -> None:
    with pytest.raises(
        NotImplementedError, match=r"layer_config\['mlp'\]: activation quantization \(act_bits=8"
    ):
        check_schemes(PRESETS["W4A16"], {"mlp": "INT8_W8A8"}, "auto_gptq")


def test_int_activation_layers_beside_a_weight_only_default_are_refused_before_the_model_loads() -> None:
    # auto_round stores INT8_W8A8 only as the default scheme (Intel's fake packing); beside a
    # W4A16 default its GPTQ packing would hold no activations
    with pytest.raises(SchemeError, match=r"layer_config\['mlp'\]: int 8-bit with int8 activations beside"):
        check_schemes(PRESETS["W4A16"], {"mlp": "INT8_W8A8"}, "auto_round")


def test_a_checkpoint_layer_stored_with_activation_quantization_is_refused_on_loading() -> None:
    config = {
        "quant_method": "auto-round",
        "bits": 4,
        "group_size": 128,
        "sym": True,
        "data_type": "int",
        "packing_format": "auto_round:auto_gptq",
        "block_name_to_quantize": "model.layers",
        "extra_config": {"model.layers.0.mlp.up_proj": {"bits": 8, "act_bits": 8}},
    }
    spec = spec_for(config, ["model.layers"])
    assert spec.scheme_for("model.layers.0.mlp.down_proj") == PRESETS["W4A16"]
    with pytest.raises(
        NotImplementedError, match=r"layer model\.layers\.0\.mlp\.up_proj: activation quantization"
    ):
        spec.scheme_for("model.layers.0.mlp.up_proj")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"data_type": "mx_fp8"}, {"data_type": "mx_fp", "bits": 8}),
        ({"data_type": "fp8", "bits": 8}, {"data_type": "fp", "bits": 8}),
        (
            {"data_type": "nv_fp4", "act_data_type": "mx_fp4"},
            {"data_type": "nv_fp", "act_data_type": "mx_fp", "act_bits": 4},
        ),
    ],
)
def test_intels_type_with_bits_spellings_split_into_data_type_and_bits(fields: dict, expected: dict) -> None:
    base = {"group_size": 16} if fields["data_type"] == "nv_fp4" else {"group_size": 32}
    scheme = Scheme.from_dict({**base, **fields})
    assert {k: getattr(scheme, k) for k in expected} == expected
    assert parse_scheme("MXFP4", data_type="mx_fp8").bits == 8  # an override, as in Intel's CLI


def test_a_type_with_bits_spelling_that_contradicts_bits_is_refused_naming_both() -> None:
    with pytest.raises(SchemeError, match=r"data_type='mx_fp8' means bits=8, but bits=4 was given"):
        parse_scheme("MXFP4", data_type="mx_fp8", bits=4)
