"""AutoRound's Intel-compatible signature: a keyword nobody reads is refused (a typo never
silently does nothing); Intel's keywords that only tune its own runtime are accepted with a
warning naming them."""

from __future__ import annotations

import logging

import pytest

from autoround import AutoRound


def test_an_unknown_constructor_keyword_is_refused_naming_it(tiny_llama) -> None:
    with pytest.raises(TypeError, match=r"AutoRound got unexpected keyword argument\(s\) \['iter'\]"):
        AutoRound(tiny_llama, iter=0)


def test_intels_no_effect_keywords_warn_naming_them(tiny_llama, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="autoround"):
        AutoRound(tiny_llama, iters=0, nblocks=2, to_quant_block_names="model.layers", momentum=0.9,
                  enable_norm_bias_tuning=False)  # fmt: skip
    (record,) = [r for r in caplog.records if "no effect" in r.getMessage()]
    assert "['enable_norm_bias_tuning', 'momentum', 'nblocks', 'to_quant_block_names']" in record.getMessage()


def test_quantize_and_save_refuses_an_unknown_keyword_before_any_work(tmp_path, tiny_llama) -> None:
    rounder = AutoRound(tiny_llama, iters=0, disable_opt_rtn=True)
    with pytest.raises(
        TypeError, match=r"quantize_and_save got unexpected keyword argument\(s\) \['output'\]"
    ):
        rounder.quantize_and_save(tmp_path / "out", output="x")
    assert rounder.result is None
    assert list(tmp_path.iterdir()) == []


def test_quantize_and_save_accepts_intels_inplace_with_a_warning(tmp_path, tiny_llama, caplog) -> None:
    rounder = AutoRound(tiny_llama, group_size=32, iters=0, disable_opt_rtn=True)
    with caplog.at_level(logging.WARNING, logger="autoround"):
        path = rounder.quantize_and_save(tmp_path / "out", inplace=True)
    assert (path / "config.json").is_file()
    assert any("['inplace'] have no effect" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("device_map", ["0,1", "cuda:0,cuda:1", {"model.layers.0": 0, "model.layers.1": 1}])
def test_a_device_map_of_several_devices_is_refused_before_any_work(tiny_llama, device_map) -> None:
    with pytest.raises(NotImplementedError, match="several devices"):
        AutoRound(tiny_llama, iters=0, device_map=device_map)


def test_intels_scheme_field_keywords_override_the_preset(tiny_llama) -> None:
    """As in Intel's AutoRound, ``act_bits=16`` asks for a preset's weight-only form and
    ``data_type`` swaps the weight type; the preset's other fields stay."""
    rounder = AutoRound(tiny_llama, scheme="MXFP4", act_bits=16, iters=0)
    assert (rounder.scheme.data_type, rounder.scheme.bits, rounder.scheme.group_size) == ("mx_fp", 4, 32)
    assert rounder.scheme.is_weight_only
    assert AutoRound(tiny_llama, scheme="MXFP4", data_type="mx_fp_rceil", act_bits=16).scheme.data_type == (
        "mx_fp_rceil"
    )


def test_an_activation_scheme_without_the_override_is_refused_before_any_work(tiny_llama) -> None:
    rounder = AutoRound(tiny_llama, scheme="NVFP4", act_data_type="nv_fp", iters=0)
    with pytest.raises(NotImplementedError, match="act_bits=16"):
        rounder.quantize()
    assert rounder.result is None
