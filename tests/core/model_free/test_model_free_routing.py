"""Intel auto-round 0.16.1's rule for when model-free RTN is taken without being asked, and what
an explicit request can do."""

from __future__ import annotations

import pytest

from autoround.model_free import model_free_problem, model_free_supported
from autoround.schemes import parse_scheme


@pytest.mark.parametrize(
    ("scheme", "overrides"),
    [
        ("W4A16", {}),
        ("W2A16G64", {}),
        ("W8A16", {}),
        ("W4A16", {"sym": False, "group_size": 32}),
        ("W2A16", {"group_size": -1}),
        ("BF16", {}),  # Intel's too: every layer 16-bit unless layer_config says otherwise
    ],
)
def test_plain_rtn_of_2_4_8_bit_integers_into_auto_round_is_routed_there(scheme, overrides) -> None:
    choice = model_free_supported(parse_scheme(scheme, **overrides), ("auto_round",), "rtn")
    assert choice and choice.supported and "no model needed" in choice.reason


@pytest.mark.parametrize(
    ("scheme", "formats", "algorithm", "layer_config", "why"),
    [
        ("W4A16", ("auto_round",), "opt_rtn", None, "uses 'opt_rtn'"),
        ("W4A16", ("auto_round",), "signround", None, "uses 'signround'"),
        ("W3A16", ("auto_round",), "rtn", None, "by default for bits [2, 4, 8] only"),
        ("W4A16", ("auto_gptq",), "rtn", None, "format 'auto_gptq'"),
        ("W4A16", ("auto_round", "auto_gptq"), "rtn", None, "format 'auto_round,auto_gptq'"),
        ("GGUF:Q4_K_M", ("auto_round",), "rtn", None, "data_type 'gguf_k'"),
        ("W4A16", ("auto_round",), "rtn", {"lm_head": "GGUF:Q4_K"}, "layer_config['lm_head']"),
        ("W4A16", ("auto_round",), "rtn", {"down_proj": {"bits": 5}}, "bits=5"),
    ],
)
def test_everything_else_loads_the_model(scheme, formats, algorithm, layer_config, why) -> None:
    choice = model_free_supported(parse_scheme(scheme), formats, algorithm, layer_config)
    assert not choice and why in choice.reason


def test_an_explicit_request_also_takes_3_bits_but_not_other_formats_or_types() -> None:
    assert model_free_problem(parse_scheme("W3A16")) is None
    assert model_free_problem(parse_scheme("W4A16"), "AUTO_ROUND") is None
    assert "only 'auto_round'" in (model_free_problem(parse_scheme("W4A16"), "llm_compressor") or "")
    mx = parse_scheme({"data_type": "mx_fp", "bits": 4, "group_size": 32})
    assert "integer schemes only" in (model_free_problem(mx) or "")
