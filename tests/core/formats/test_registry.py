"""The format registry: which names can be written, which configs each format reads, and what
a format's capabilities refuse before any work."""

from __future__ import annotations

import dataclasses

import pytest

from autoround.errors import CheckpointError, FormatError, SchemeError
from autoround.formats import (
    FORMATS,
    check_format,
    check_formats,
    reader_for,
    spec_for,
    to_auto_round_config,
    writable_formats,
)
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


WRITABLE = [
    "auto_round",
    "auto_round:auto_gptq",
    "auto_round:auto_awq",
    "auto_gptq",
    "auto_awq",
    "llm_compressor",
]


def test_an_unknown_format_is_refused_naming_the_writable_ones() -> None:
    with pytest.raises(
        FormatError, match=r"unknown format 'onnx'; allowed: \['auto_round', 'auto_round:auto_gptq'"
    ):
        check_format("onnx")
    assert writable_formats()[: len(WRITABLE)] == WRITABLE


def test_a_near_miss_names_the_closest_formats() -> None:
    with pytest.raises(FormatError, match=r"unknown format 'gptq' \(did you mean 'auto_gptq'"):
        check_format("gptq")


def test_a_format_error_is_a_value_error() -> None:
    assert issubclass(FormatError, ValueError)


def test_an_entry_only_read_is_refused_for_saving(monkeypatch) -> None:
    reader = dataclasses.replace(FORMATS["auto_gptq"], name="gptq_reader", writer=None)
    monkeypatch.setitem(FORMATS, "gptq_reader", reader)
    with pytest.raises(FormatError, match=r"format 'gptq_reader' can be read but not written.*allowed: \["):
        check_format("gptq_reader")
    with pytest.raises(FormatError, match="only its reader is built"):
        reader.save(None, "unused")  # type: ignore[arg-type]


def test_several_formats_split_on_commas_keeping_order_and_dropping_repeats() -> None:
    assert check_formats("auto_round, auto_gptq,auto_round") == ("auto_round", "auto_gptq")
    assert check_formats(["auto_awq", "auto_round,llm_compressor"]) == (
        "auto_awq",
        "auto_round",
        "llm_compressor",
    )
    with pytest.raises(FormatError, match="empty entry"):
        check_formats("auto_round,,auto_gptq")
    with pytest.raises(FormatError, match="unknown format 'gguf:q9'"):
        check_formats("auto_round,gguf:q9")


def test_writing_only_entries_read_nothing_and_name_who_reads_them() -> None:
    for name in ("auto_round:auto_gptq", "auto_round:auto_awq", "llm_compressor"):
        assert not FORMATS[name].can_read({"quant_method": FORMATS[name].quant_method})
    assert FORMATS["auto_round:auto_gptq"].read_via == "auto_round"
    assert FORMATS["auto_round:auto_awq"].read_via == "auto_awq"
    assert not FORMATS["llm_compressor"].readable
    assert all(FORMATS[name].runtimes for name in writable_formats())


def test_format_names_are_matched_case_and_space_insensitively() -> None:
    assert check_format(" Auto_Round ") == "auto_round"


@pytest.mark.parametrize(
    ("config", "name", "packing", "layout", "zero_offset"),
    [
        (AUTO_ROUND, "auto_round", "auto_round:auto_gptq", "gptq", 1),
        ({**AUTO_ROUND, "packing_format": "auto_round", "sym": False}, "auto_round", "auto_round", "gptq", 0),
        (GPTQ, "auto_gptq", "auto_round:auto_gptq", "gptq", 1),
        ({**GPTQ, "checkpoint_format": "gptq_v2"}, "auto_gptq", "auto_round", "gptq", 0),
        (AWQ, "auto_awq", "auto_round", "awq", 0),
        (
            {**AUTO_ROUND, "packing_format": "auto_round:auto_awq", "sym": False},
            "auto_awq",
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
        ({**GPTQ, "dynamic": {"lm_head": {}}}, r"'dynamic' key 'lm_head' must start with '\+:' or '-:'"),
        (
            {**GPTQ, "checkpoint_format": "marlin"},
            r"checkpoint_format 'marlin' is not supported; allowed: \['gptq', 'gptq_v2'\]",
        ),
        ({**AWQ, "version": "gemv"}, r"AWQ version 'gemv' is not supported; allowed: \['gemm'\]"),
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


def test_gptq_dynamic_overrides_read_as_per_layer_schemes() -> None:
    dynamic = {r"+:.*model\.layers\.0\.mlp\.down_proj.*": {"bits": 8, "group_size": 32, "sym": True}}
    dynamic[r"-:.*model\.layers\.1\.self_attn\.o_proj.*"] = {}
    spec = spec_for({**GPTQ, "dynamic": dynamic}, ["model.layers"])
    assert spec.scheme_for("model.layers.0.mlp.down_proj") == Scheme(bits=8, group_size=32)
    assert spec.scheme_for("model.layers.1.self_attn.o_proj") is None
    assert spec.scheme_for("model.layers.1.mlp.down_proj") == Scheme(bits=4, group_size=32)


def test_awq_without_zero_points_reads_as_symmetric() -> None:
    spec = spec_for({**AWQ, "zero_point": False, "sym": True})
    assert spec.default == Scheme(bits=4, group_size=32, sym=True)
    assert spec.zero_offset == 0  # the stored zero points (8) are used as they are


def test_capabilities_name_what_they_refuse() -> None:
    awq = FORMATS["auto_awq"].capabilities
    assert awq.why_not(Scheme(bits=2, group_size=32)) == "int 2-bit"
    assert awq.why_not(Scheme(bits=4, group_size=0)) == "per-tensor (group_size 0)"
    assert awq.stores(Scheme(bits=4, group_size=32, sym=False))
    symmetric_only = Capabilities(("int",), (4,), sym=(True,))
    assert symmetric_only.why_not(Scheme(bits=4, sym=False)) == "asymmetric"
    assert "symmetric only" in symmetric_only.describe()


def test_awq_refuses_partial_groups_and_mixed_schemes_naming_the_layers(tiny_llama) -> None:
    plan = resolve(tiny_llama, PRESETS["W4A16G32"], {"model.layers.0.mlp.down_proj": {"sym": False}})
    problems = FORMATS["auto_awq"].problems(plan, tiny_llama)
    assert [p.split(":")[0] for p in problems] == ["model.layers.0.mlp.down_proj"]
    assert "a scheme other than the rest's (int W4 group 32 asym, not int W4 group 32)" in problems[0]
    assert FORMATS["auto_round:auto_awq"].problems(plan, tiny_llama) == []  # extra_config holds it
    partial = resolve(tiny_llama, PRESETS["W4A16G64"])  # 96 and 160 inputs: a partial last group
    problems = FORMATS["auto_round:auto_awq"].problems(partial, tiny_llama)
    assert "group_size 64 on 96 inputs (a partial last group)" in problems[0]
    assert FORMATS["auto_gptq"].problems(partial, tiny_llama) == []
