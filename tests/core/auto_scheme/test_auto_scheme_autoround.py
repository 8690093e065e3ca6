"""``AutoRound(model, tokenizer, scheme=AutoScheme(...))``: the searched plan is quantized by RTN,
optimized RTN or SignRound unchanged and saved through the ordinary per-layer config; bad
requests are refused before any work."""

from __future__ import annotations

import json

import pytest
import torch
from gguf import GGUFReader
from tiny_gguf import bpe_tokenizer, gguf_model
from torch import nn

from autoround import AutoRound, AutoScheme, load_quantized, parse_scheme, quantize
from autoround.auto_scheme import layer_bits
from autoround.errors import SchemeError
from autoround.formats import checkpoint_spec, gguf_file

OPTIONS = "W2A16G32,W4A16G32,W8A16G32"
TEXTS = [" ".join(["the of and to in a is was for on as with by at"] * 6)] * 8


def _auto(avg_bits: float = 3.0, **kwargs) -> AutoScheme:
    return AutoScheme(avg_bits, OPTIONS, nsamples=4, seqlen=32, **kwargs)


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("model.")}


@pytest.mark.parametrize(
    ("settings", "algorithm"),
    [
        ({"iters": 0, "disable_opt_rtn": True}, "rtn"),
        ({"iters": 0}, "opt_rtn"),
        ({"iters": 2, "batch_size": 2}, "signround"),
    ],
)
def test_the_searched_plan_is_quantized_saved_and_loads_back(
    tmp_path, tiny_llama, tiny_tokenizer, settings, algorithm
) -> None:
    rounder = AutoRound(
        tiny_llama, tiny_tokenizer, scheme=_auto(), dataset=TEXTS, nsamples=4, seqlen=32, **settings
    )
    path = rounder.quantize_and_save(tmp_path / "out")
    assert rounder.run.algorithm == algorithm
    spec = checkpoint_spec(path)
    stored = {name: spec.scheme_for(name) for name in _linears(tiny_llama)}
    assert len({s.bits for s in stored.values()}) > 1  # mixed
    linears = _linears(tiny_llama)
    bits = sum(layer_bits(stored[n], m.out_features, m.in_features) for n, m in linears.items())
    assert bits / sum(m.weight.numel() for m in linears.values()) <= 3.0
    loaded = load_quantized(path)
    ids = torch.randint(0, 128, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, rounder.result.model(ids).logits, atol=1e-3, rtol=1e-3)


def test_the_plan_is_stored_as_per_layer_config(tmp_path, tiny_llama, tiny_tokenizer) -> None:
    rounder = AutoRound(
        tiny_llama, tiny_tokenizer, scheme=_auto(), dataset=TEXTS, iters=0, disable_opt_rtn=True
    )
    path = rounder.quantize_and_save(tmp_path / "out")
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    plan = rounder.result.plan.quantized()
    default = parse_scheme({k: config[k] for k in ("bits", "group_size", "sym", "data_type")})
    assert default == rounder.run.scheme
    assert {n for n, s in plan.items() if s != default} == set(config["extra_config"])


def test_pins_are_kept(tmp_path, tiny_llama, tiny_tokenizer) -> None:
    rounder = AutoRound(
        tiny_llama,
        tiny_tokenizer,
        scheme=_auto(4.0),
        layer_config={"mlp.down_proj": "W8A16"},
        dataset=TEXTS,
        iters=0,
        disable_opt_rtn=True,
    )
    qm = rounder.quantize()
    for name, scheme in qm.plan.quantized().items():
        if name.endswith("down_proj"):
            assert scheme == parse_scheme("W8A16")


def test_a_budget_the_model_cannot_meet_is_refused_before_calibration(
    tmp_path, tiny_llama, tiny_tokenizer
) -> None:
    missing = tmp_path / "no-such-data.txt"  # building calibration would fail on it
    rounder = AutoRound(tiny_llama, tiny_tokenizer, scheme=_auto(2.1), dataset=str(missing), iters=0)
    with pytest.raises(SchemeError, match=r"avg_bits=2\.1 is outside the range \[2\.562, 8\.750\]"):
        rounder.quantize_and_save(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_option_the_format_cannot_store_is_refused_naming_it(tmp_path, tiny_llama, tiny_tokenizer) -> None:
    rounder = AutoRound(tiny_llama, tiny_tokenizer, scheme=AutoScheme(4.5, "GGUF:Q4_K_M,W8A16"), iters=0)
    with pytest.raises(
        SchemeError, match=r"AutoScheme option GGUF:Q4_K_M: .* cannot be stored in format 'auto_round'"
    ):
        rounder.quantize_and_save(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_scheme_overrides_beside_an_autoscheme_are_refused(tiny_llama) -> None:
    with pytest.raises(
        SchemeError, match=r"\['bits', 'group_size'\] override one scheme, but scheme is an AutoScheme"
    ):
        AutoRound(tiny_llama, scheme=_auto(), bits=4, group_size=32, iters=0)


def test_gguf_options_are_written_to_a_gguf_file(tmp_path) -> None:
    auto = AutoScheme(4.5, "GGUF:Q2_K_S,GGUF:Q4_K_M,GGUF:Q8_0", nsamples=4, seqlen=32)
    rounder = AutoRound(
        gguf_model(), bpe_tokenizer(), scheme=auto, dataset=TEXTS, iters=0, disable_opt_rtn=True
    )
    path = rounder.quantize_and_save(tmp_path / "out", format="gguf:q4_k_m")
    types = {t.name: t.tensor_type.name.lower() for t in GGUFReader(gguf_file(path)).tensors}
    chosen = {n.split(".")[-1]: s for n, s in rounder.result.plan.quantized().items() if ".layers.0." in n}
    names = {"q2_k": 2, "q4_k": 4, "q8_0": 8}
    assert types["blk.0.ffn_down.weight"] in names
    assert names[types["blk.0.ffn_down.weight"]] == chosen["down_proj"].bits
    assert len({types[t] for t in types if t.startswith("blk.")} - {"f32"}) > 1


def test_the_functional_api_searches_on_the_calibration_ids_it_is_given(tiny_llama) -> None:
    ids = torch.randint(0, 128, (8, 64), generator=torch.Generator().manual_seed(0))
    qm = quantize(tiny_llama, _auto(3.5), calibration=ids, progress=False)
    assert len({s.bits for s in qm.plan.quantized().values()}) > 1
    with pytest.raises(ValueError, match="AutoScheme searches on calibration token ids"):
        quantize(tiny_llama, _auto(3.5))
    with pytest.raises(SchemeError, match=r"\['bits'\] override one scheme"):
        quantize(tiny_llama, _auto(3.5), calibration=ids, bits=4)


def test_a_sixteen_bit_option_keeps_its_layers_unquantized(tiny_llama) -> None:
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(0))
    qm = quantize(
        tiny_llama, AutoScheme(9.0, "W4A16G32,BF16", nsamples=4, seqlen=32), calibration=ids, progress=False
    )
    kept = [n for n, d in qm.plan.layers.items() if d.scheme is None and n != "lm_head"]
    assert kept and len(qm.plan.quantized()) > 0
