"""Integer activations in the ``auto_round`` format: Intel's packing ``auto_round:fake``
(``INT8_W8A8``: int8 per-channel weights with int8 per-token dynamic activations; ``INT4``: the
same at 4 bits, W4A4), written as Intel auto-round 0.16.1 writes them and read back.

References: Intel's RTN exports of the tiny dense Llama (tests/fixtures/intel/exports/
ar_int8_w8a8, ar_int4_w4a4; scripts/intel/make_fake_act_exports.py) with the logits and greedy
tokens of Intel's in-memory model (its ``WrapperWALayer`` quantizing each layer's input) and of
Intel's own loader (``FakeActQuantLinear``). Our RTN of the same bf16 model saved in
``auto_round`` is Intel's weight file header for header and value for value (the bytes differ in
the sign of zero weights only) and its config key for key; the export loaded
by ``load_quantized`` keeps dense Linears, quantizes their inputs, and gives Intel's logits and
tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from autoround import quantize, save
from autoround.errors import CheckpointError, FormatError
from autoround.formats import FORMATS
from autoround.formats.auto_round import parse_config
from autoround.formats.preflight import check_schemes
from autoround.loading import load_dense, load_quantized
from autoround.nn import detach_act_quant
from autoround.nn.act_hooks import act_kind_of
from autoround.schemes import parse_scheme

FIXTURES = Path(__file__).parents[2] / "fixtures" / "intel"
EXPORTS = FIXTURES / "exports"
#: Intel's fixture -> our preset (Intel's call) and the activation kind of its layers.
CASES: dict[str, tuple[str, str]] = {"ar_int8_w8a8": ("INT8_W8A8", "int8"), "ar_int4_w4a4": ("INT4", "int4")}
KEY = "model.layers.1.self_attn.k_proj.weight"


def _dense_model() -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(FIXTURES / "tiny_llama_dense", dtype=torch.bfloat16).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    made: dict[str, tuple[Path, torch.nn.Module]] = {}

    def make(case: str) -> tuple[Path, torch.nn.Module]:
        if case not in made:
            qm = quantize(_dense_model(), CASES[case][0], progress=False)
            path = save(qm, tmp_path_factory.mktemp(case) / "ckpt", format="auto_round")
            made[case] = (path, qm.model)
        return made[case]

    return make


@pytest.mark.parametrize("case", list(CASES))
def test_weight_file_is_intels_but_for_the_sign_of_zero(case, saved) -> None:
    """The header byte for byte (names, safetensors' order, dtypes, shapes, offsets, no metadata)
    and every value; the bytes differ only where both weights are zero and the signs differ:
    Intel's qdq is ``round(w / s) * s`` (a zero keeps the weight's sign), ours ``s * (codes -
    zero)`` (a zero takes the scale's sign). Equal values; core's int qdq decides the sign."""
    path, _ = saved(case)
    mine, theirs = ((d / "model.safetensors").read_bytes() for d in (path, EXPORTS / case))
    header = 8 + int.from_bytes(theirs[:8], "little")
    assert mine[:header] == theirs[:header] and len(mine) == len(theirs)
    assert b"__metadata__" not in mine[:header]
    ours, intels = load_file(path / "model.safetensors"), load_file(EXPORTS / case / "model.safetensors")
    for name, tensor in intels.items():
        assert torch.equal(ours[name], tensor), name
        differ = ours[name].view(torch.int16) != tensor.view(torch.int16)
        assert bool((tensor[differ] == 0).all()), f"{name}: bits differ beyond the sign of zero"
    assert not (path / "quantization_config.json").exists()  # Intel's fake export writes none


@pytest.mark.parametrize("case", list(CASES))
def test_config_equals_intels_key_for_key(case, saved) -> None:
    path, _ = saved(case)
    mine, theirs = (json.loads((d / "config.json").read_text()) for d in (path, EXPORTS / case))
    for key in ("dtype", "tie_word_embeddings", "architectures"):
        assert mine.get(key) == theirs.get(key), key
    mine, theirs = mine["quantization_config"], theirs["quantization_config"]
    assert mine.pop("autoround_version") and theirs.pop("autoround_version")
    assert mine == theirs
    assert theirs["packing_format"] == "auto_round:fake" and theirs["regex_config"] == {}


def _logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("case", list(CASES))
def test_intels_export_loads_with_the_logits_and_tokens_of_intels_models(case) -> None:
    """Intel's in-memory model (float32, bf16-valued weights, inputs quantized per token with a
    float16 scale) and ours compute the same products: within 1e-5, as the other Intel logits
    (bit-identical on the AVX512 CPU the fixture was made on; another ISA sums in another order)."""
    meta = json.loads((EXPORTS / case / "reference.json").read_text())
    reference = load_file(EXPORTS / case / "reference.safetensors")
    loaded = load_quantized(EXPORTS / case, dtype=torch.float32)
    layers = [m for m in loaded.modules() if act_kind_of(m) is not None]
    assert len(layers) == 14 and {act_kind_of(m) for m in layers} == {CASES[case][1]}
    assert all(type(m) is torch.nn.Linear for m in layers)  # dense: nothing to unpack
    logits = _logits(loaded, meta["input_ids"])
    for which in ("in_memory", "loaded"):
        torch.testing.assert_close(logits, reference[f"{which}_logits"], rtol=0, atol=1e-5)
    ids = torch.tensor([meta["input_ids"]])
    with torch.no_grad():
        out = loaded.generate(
            ids, max_new_tokens=meta["new_tokens"], min_new_tokens=meta["new_tokens"], do_sample=False
        )
    assert out[0, ids.shape[1] :].tolist() == reference["in_memory_greedy"].tolist()
    assert detach_act_quant(loaded) == 14  # the same weights with the inputs as they are differ
    assert (_logits(loaded, meta["input_ids"]) - logits).abs().max() > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_our_checkpoint_loads_back_to_the_in_memory_model(case, saved) -> None:
    path, in_memory = saved(case)
    ids = [1, 45, 99, 7, 200, 13, 64, 250]
    loaded = load_quantized(path, dtype=torch.bfloat16)
    assert torch.equal(_logits(loaded, ids), _logits(in_memory, ids))
    dense = load_dense(path, dtype=torch.bfloat16)  # weights only: the hooks are the loader's
    assert torch.equal(
        dense.model.layers[1].self_attn.k_proj.weight, loaded.model.layers[1].self_attn.k_proj.weight
    )


def _broken_copy(tmp_path: Path, edit) -> Path:
    target = tmp_path / "broken"
    shutil.copytree(EXPORTS / "ar_int8_w8a8", target)
    tensors = load_file(target / "model.safetensors")
    edit(tensors)
    save_file(tensors, target / "model.safetensors")
    return target


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.pop(KEY), f"{KEY} is missing"),
        (lambda t: t.update({KEY: t[KEY][:, :32].contiguous()}), rf"{KEY} has shape \(32, 32\)"),
    ],
    ids=["missing", "shape"],
)
def test_a_missing_or_misshapen_weight_is_a_checkpoint_error_naming_it(tmp_path, edit, match) -> None:
    with pytest.raises(CheckpointError, match=match):
        load_quantized(_broken_copy(tmp_path, edit))


def _config(**changes) -> dict:
    config = json.loads((EXPORTS / "ar_int8_w8a8" / "config.json").read_text())["quantization_config"]
    return {**config, **changes}


@pytest.mark.parametrize(
    "changes",
    [
        {"act_bits": 16},
        {"act_data_type": "fp"},
        {"act_group_size": 32},
        {"data_type": "mx_fp", "group_size": 32},
        {"group_size": 32},
    ],
)
def test_a_fake_config_other_than_int_per_token_activations_is_refused(changes) -> None:
    with pytest.raises(
        CheckpointError, match=r"auto_round:fake.*allowed: int weights with int 8-bit or 4-bit"
    ):
        parse_config(_config(**changes))


def test_extra_config_entries_keep_their_own_activation_fields() -> None:
    spec = parse_config(
        _config(extra_config={"model.layers.0.mlp.down_proj": {"act_bits": 16}, "lm_head": _lm_head_entry()})
    )
    assert spec.scheme_for("model.layers.0.mlp.down_proj").is_weight_only
    assert spec.scheme_for("model.layers.0.mlp.up_proj") == parse_scheme("INT8_W8A8")
    assert spec.scheme_for("lm_head") == parse_scheme("INT4")
    with pytest.raises(CheckpointError, match=r"extra_config\['lm_head'\]"):
        parse_config(_config(extra_config={"lm_head": {**_lm_head_entry(), "act_data_type": "fp"}}))


def _lm_head_entry() -> dict:
    fields = parse_scheme("INT4").to_dict()
    return {
        k: v
        for k, v in fields.items()
        if k.startswith("act_") or k in ("bits", "group_size", "sym", "data_type")
    }


def test_the_formats_say_where_integer_activations_go() -> None:
    for preset in ("INT8_W8A8", "INT4"):
        check_schemes(parse_scheme(preset), None, "auto_round")
        with pytest.raises(NotImplementedError, match=r"activation quantization"):
            check_schemes(parse_scheme(preset), None, "auto_round:auto_gptq")
    assert "auto_round:fake" in FORMATS["auto_round"].capabilities.describe()


def test_integer_activations_beside_a_weight_only_default_are_refused(tmp_path) -> None:
    layer = "model.layers.0.mlp.down_proj"
    qm = quantize(_dense_model(), "W8A16", layer_config={layer: "INT8_W8A8"}, progress=False)
    with pytest.raises(FormatError, match=f"{layer}: int 8-bit with int8 activations beside"):
        save(qm, tmp_path / "ckpt", format="auto_round")


def test_a_weight_only_override_in_a_fake_checkpoint_loads_without_a_hook(tmp_path) -> None:
    layer = "model.layers.0.mlp.down_proj"
    qm = quantize(_dense_model(), "INT8_W8A8", layer_config={layer: {"act_bits": 16}}, progress=False)
    path = save(qm, tmp_path / "ckpt", format="auto_round")
    extra = json.loads((path / "config.json").read_text())["quantization_config"]["extra_config"]
    assert extra == {layer: {"act_bits": 16}}
    loaded = load_quantized(path, dtype=torch.bfloat16)
    assert act_kind_of(loaded.get_submodule(layer)) is None
    assert act_kind_of(loaded.get_submodule("model.layers.0.mlp.up_proj")) == "int8"
    ids = [3, 17, 42, 5]
    assert torch.equal(_logits(loaded, ids), _logits(qm.model, ids))
