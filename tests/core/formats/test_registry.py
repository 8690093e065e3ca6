"""The format registry: which names can be written, which configs each format reads, and what
a format's capabilities refuse before any work."""

from __future__ import annotations

import dataclasses

import pytest

from autoround.errors import CheckpointError, FormatError, SchemeError
from autoround.formats import FORMATS, check_format, reader_for, spec_for, to_auto_round_config
from autoround.formats.base import Capabilities
from autoround.formats.preflight import check_plan
from autoround.layer_plan import resolve
from autoround.schemes import PRESETS, Scheme

GPTQ = {
    "quant_method": "gptq",
    "bits": 4,
    "group_size": 32,
    "sym": True,
    "data_type": "int",
    "desc_act": False,
}
AWQ = {
    "quant_method": "awq",
    "bits": 4,
    "group_size": 32,
    "sym": False,
    "data_type": "int",
    "version": "gemm",
    "zero_point": True,
    "to_quant_block_names": "model.layers",
    "modules_to_not_convert": ["lm_head"],
}
AUTO_ROUND = {
    "quant_method": "auto-round",
    "bits": 4,
    "group_size": 128,
    "sym": True,
    "data_type": "int",
    "packing_format": "auto_round:auto_gptq",
    "block_name_to_quantize": "model.layers",
}


def test_an_unknown_format_is_refused_naming_the_writable_ones() -> None:
    with pytest.raises(FormatError, match=r"unknown format 'onnx'; allowed: \['auto_round'\]"):
        check_format("onnx")


def test_a_format_error_is_a_value_error() -> None:
    assert issubclass(FormatError, ValueError)


@pytest.mark.parametrize("name", ["gptq", "awq"])
def test_a_format_only_read_is_refused_for_saving(name) -> None:
    with pytest.raises(
        FormatError, match=rf"format '{name}' can be read but not written.*allowed: \['auto_round'\]"
    ):
        check_format(name)
    with pytest.raises(FormatError, match="only its reader is built"):
        FORMATS[name].save(None, "unused")  # type: ignore[arg-type]


def test_format_names_are_matched_case_and_space_insensitively() -> None:
    assert check_format(" Auto_Round ") == "auto_round"


@pytest.mark.parametrize(
    ("config", "name", "packing", "layout", "zero_offset"),
    [
        (AUTO_ROUND, "auto_round", "auto_round:auto_gptq", "gptq", 1),
        ({**AUTO_ROUND, "packing_format": "auto_round", "sym": False}, "auto_round", "auto_round", "gptq", 0),
        (GPTQ, "gptq", "auto_round:auto_gptq", "gptq", 1),
        ({**GPTQ, "checkpoint_format": "gptq_v2"}, "gptq", "auto_round", "gptq", 0),
        (AWQ, "awq", "auto_round", "awq", 0),
        (
            {**AUTO_ROUND, "packing_format": "auto_round:auto_awq", "sym": False},
            "awq",
            "auto_round",
            "awq",
            0,
        ),
    ],
)
def test_spec_for_picks_the_format_that_reads_the_config(config, name, packing, layout, zero_offset) -> None:
    assert reader_for(config).name == name
    spec = spec_for(config, ["model.layers"])
    assert (spec.packing_format, spec.layout, spec.zero_offset) == (packing, layout, zero_offset)
    assert spec.default.bits == 4 and spec.default.group_size == config["group_size"]


def test_gptq_fills_in_the_models_blocks_and_ignores_act_order_indices() -> None:
    spec = spec_for(GPTQ, ["model.layers"])
    assert spec.block_names == ("model.layers",)
    assert spec.scheme_for("model.layers.0.mlp.up_proj") == Scheme(bits=4, group_size=32)
    assert spec.ignored_tensors == (r"\.g_idx$",)


def test_awq_keeps_its_unconverted_modules_in_16_bits() -> None:
    spec = spec_for(AWQ)
    assert spec.block_names == ("model.layers",)
    assert spec.scheme_for("lm_head") is None
    assert spec.scheme_for("model.layers.1.self_attn.o_proj") == Scheme(bits=4, group_size=32, sym=False)


def test_awq_reads_autoawqs_own_key_names() -> None:
    config = {k: v for k, v in AWQ.items() if k not in ("bits", "group_size")}
    spec = spec_for({**config, "w_bit": 4, "q_group_size": 64})
    assert (spec.default.bits, spec.default.group_size) == (4, 64)


def test_an_unknown_quant_method_names_the_ones_read() -> None:
    with pytest.raises(
        FormatError,
        match=r"quant_method 'bitsandbytes' cannot be loaded as auto-round; allowed: auto-round, gptq, awq",
    ):
        spec_for({"quant_method": "bitsandbytes"})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({**GPTQ, "desc_act": True}, "desc_act=True"),
        ({**GPTQ, "dynamic": {"-:.*": {}}}, "'dynamic' overrides are not supported"),
        (
            {**GPTQ, "checkpoint_format": "marlin"},
            r"checkpoint_format 'marlin' is not supported; allowed: \['gptq', 'gptq_v2'\]",
        ),
        ({**AWQ, "version": "gemv"}, r"AWQ version 'gemv' is not supported; allowed: \['gemm'\]"),
        ({**AWQ, "zero_point": False}, "without zero points"),
        ({**AWQ, "bits": 3}, "bits=3"),
    ],
)
def test_a_variant_a_reader_does_not_take_is_refused_naming_why(config, message) -> None:
    with pytest.raises(CheckpointError, match=message):
        spec_for(config, ["model.layers"])


@pytest.mark.parametrize("config", [GPTQ, AWQ, AUTO_ROUND])
def test_the_auto_round_keys_of_a_config_read_as_the_config_does(config) -> None:
    converted = to_auto_round_config(config)
    assert converted["quant_method"] == "auto-round"
    assert to_auto_round_config(converted) == converted
    assert spec_for(converted, ["model.layers"]) == spec_for(config, ["model.layers"])


def test_the_formats_capabilities_refuse_a_plan_before_any_work(tiny_llama, monkeypatch) -> None:
    narrow = dataclasses.replace(
        FORMATS["auto_round"], name="four_bit", capabilities=Capabilities(("int",), (4,))
    )
    monkeypatch.setitem(FORMATS, "four_bit", narrow)
    check_plan(tiny_llama, resolve(tiny_llama, PRESETS["W4A16G32"]), "four_bit")
    plan = resolve(tiny_llama, PRESETS["W4A16G32"], {"model.layers.0.mlp.down_proj": {"bits": 8}})
    refusal = (
        r"down_proj: int 8-bit cannot be stored in format 'four_bit' \(it stores \['int'\] with bits \[4\]\)"
    )
    with pytest.raises(SchemeError, match=refusal):
        check_plan(tiny_llama, plan, "four_bit")


def test_auto_round_stores_the_bits_the_packing_packs() -> None:
    from autoround.packing import SUPPORTED_BITS

    assert FORMATS["auto_round"].capabilities.bits == SUPPORTED_BITS
    assert not FORMATS["auto_round"].stores(Scheme(bits=5))


def test_saving_a_scheme_the_format_cannot_store_is_refused_before_anything_is_written(
    tmp_path, tiny_llama
) -> None:
    from autoround import quantize, save

    qm = quantize(tiny_llama, "W4A16", bits=5, group_size=32, progress=False)
    with pytest.raises(FormatError, match=r"int 5-bit cannot be stored in format 'auto_round'"):
        save(qm, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
