"""The ``auto_round`` format's float weight types equal Intel auto-round 0.16.1's exports.

References: Intel's ``auto_round`` exports of the tiny dense Llama with RTN
(tests/fixtures/intel/exports/ar_{mxfp4,mxfp8,nvfp4}_a16, ar_fpw8a16, ar_fp8_g32; scripts/intel/
make_float_exports.py: ``iters=0, disable_opt_rtn=True``, act_bits=16 for the MX / NV presets).
Our RTN of the same model, saved with ``format="auto_round"``, is compared tensor for tensor
(``torch.equal``, same dtype) and key for key; and it loads back through autoround-hf giving the
in-memory quantized model's logits and greedy tokens.

Intel's NVFP4 RTN also gives q/k/v and gate/up of a block their smallest global scale
(``update_fused_layer_global_scales``); our RTN shares one per fused group too, from the group's
largest weight. The byte comparison of NVFP4 runs with Intel's step written out in the test (each
layer's global scale replaced by its group's minimum where the data type is not handed a shared
maximum already), and a second test states Intel's rule itself.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

import autoround.dtypes.nv_fp as nv_fp
import autoround_hf
from autoround import quantize, save
from autoround.errors import FormatError, SchemeError
from autoround.formats.auto_round_float import float_problem
from autoround.formats.preflight import check_schemes
from autoround.io import load_safetensors_dir
from autoround.nn import FloatQuantLinear
from autoround.schemes import parse_scheme

FIXTURES = Path(__file__).parents[2] / "fixtures" / "intel"
DENSE = FIXTURES / "tiny_llama_dense"
#: Intel's fixture -> our preset and overrides (Intel's call in make_float_exports.py).
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "ar_mxfp4_a16": ("MXFP4", {"act_bits": 16}),
    "ar_mxfp8_a16": ("MXFP8", {"act_bits": 16}),
    "ar_nvfp4_a16": ("NVFP4", {"act_bits": 16}),
    "ar_fpw8a16": ("FPW8A16", {}),
    "ar_fp8_g32": ("FPW8A16", {"group_size": 32}),
}
#: Cases without a stored Intel export (FP8 per channel: compared with Intel's export made on the
#: spot in its venv, where there is one).
EXTRA_CASES: dict[str, tuple[str, dict[str, Any]]] = {"fp8_per_channel": ("FPW8A16", {"group_size": -1})}
INTEL_PYTHON = (
    Path(os.environ.get("AUTOROUND_INTEL_VENV", Path.home() / ".cache/autoround-dev/intel-venv"))
    / "bin"
    / "python"
)
#: Config keys that legitimately differ: our version string.
OWN_KEYS = ("autoround_version",)
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
PROMPT = [1, 45, 99, 7, 200, 13, 64, 250, 31, 8]


def _key(weight: torch.Tensor) -> tuple[float, float]:
    """A weight told apart from the others (however it is grouped): its maximum and its sum."""
    return weight.abs().max().item(), weight.double().sum().item()


def _intel_fused_global_scales(dense: torch.nn.Module) -> dict[tuple[float, float], torch.Tensor]:
    """Each layer's weight -> the smallest NVFP4 global scale of its fused group, as Intel's
    ``update_fused_layer_global_scales`` sets it."""
    mapping: dict[tuple[float, float], torch.Tensor] = {}
    for block in dense.model.layers:
        for group in FUSED:
            parent = block.self_attn if group[0] == "q_proj" else block.mlp
            weights = [getattr(parent, n).weight.detach() for n in group]
            smallest = torch.stack([nv_fp.global_scale(w) for w in weights]).min()
            mapping.update({_key(w): smallest for w in weights})
    return mapping


def _quantize(case: str, monkeypatch: pytest.MonkeyPatch | None = None, dtype: torch.dtype = torch.bfloat16):
    preset, overrides = {**CASES, **EXTRA_CASES}[case]
    model = AutoModelForCausalLM.from_pretrained(DENSE, dtype=dtype)
    if monkeypatch is not None:  # emulate Intel's fused NVFP4 global scales
        fused = _intel_fused_global_scales(model)
        own = nv_fp.global_scale
        # a max|W| given is a fused group's shared one already (where RTN shares it itself)
        monkeypatch.setattr(
            nv_fp,
            "global_scale",
            lambda w, amax=None: own(w, amax) if amax is not None else fused.get(_key(w), own(w)),
        )
    return quantize(model, preset, progress=False, **overrides)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    made: dict[str, tuple[Path, Any]] = {}

    def make(case: str) -> tuple[Path, Any]:
        if case not in made:
            with pytest.MonkeyPatch.context() as mp:
                qm = _quantize(case, mp if case == "ar_nvfp4_a16" else None)
            made[case] = (save(qm, tmp_path_factory.mktemp(case) / "ckpt", format="auto_round"), qm)
        return made[case]

    return make


@pytest.mark.parametrize("case", list(CASES))
def test_tensors_equal_intels_export(case, saved) -> None:
    path, _ = saved(case)
    mine, theirs = load_safetensors_dir(path), load_safetensors_dir(FIXTURES / "exports" / case)
    assert sorted(mine) == sorted(theirs)
    for name, tensor in theirs.items():
        assert mine[name].dtype == tensor.dtype, name
        assert mine[name].shape == tensor.shape, name
        # float8 has no equality op on the CPU: compare its bytes
        if tensor.element_size() == 1 and tensor.is_floating_point():
            assert torch.equal(mine[name].view(torch.uint8), tensor.view(torch.uint8)), name
        else:
            assert torch.equal(mine[name], tensor), name


@pytest.mark.parametrize("case", list(CASES))
def test_config_equals_intels_key_for_key(case, saved) -> None:
    path, _ = saved(case)
    for file in ("config.json", "quantization_config.json"):
        mine, theirs = (json.loads((d / file).read_text()) for d in (path, FIXTURES / "exports" / case))
        if file == "config.json":
            for key in ("dtype", "tie_word_embeddings", "architectures"):
                assert mine.get(key) == theirs.get(key), key
            mine, theirs = mine["quantization_config"], theirs["quantization_config"]
        for key in OWN_KEYS:
            assert mine.pop(key) and theirs.pop(key)
        assert mine == theirs, file


def test_intels_nvfp4_global_scales_are_the_fused_groups_smallest() -> None:
    """The emulation's premise, on Intel's export: each q/k/v and gate/up part stores its group's
    smallest global scale ``448 * 6 / max|W|`` (plain torch, float32), o/down their own."""
    dense = AutoModelForCausalLM.from_pretrained(DENSE, dtype=torch.bfloat16)
    theirs = load_safetensors_dir(FIXTURES / "exports" / "ar_nvfp4_a16")

    def own(weight: torch.Tensor) -> torch.Tensor:
        return torch.tensor(448.0 * 6.0) * (1.0 / weight.detach().float().abs().max())

    for i, block in enumerate(dense.model.layers):
        for kind, group in (("self_attn", FUSED[0] + ("o_proj",)), ("mlp", FUSED[1] + ("down_proj",))):
            parent = getattr(block, kind)
            fused = torch.stack([own(getattr(parent, n).weight) for n in group[:-1]]).min()
            for n in group:
                expected = fused if n in group[:-1] else own(getattr(parent, n).weight)
                stored = theirs[f"model.layers.{i}.{kind}.{n}.weight_global_scale"]
                assert torch.equal(stored, expected.reshape(1)), (i, n)


def _logits_and_tokens(model: torch.nn.Module, new_tokens: int = 8) -> tuple[torch.Tensor, list[int]]:
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
        out = model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return logits, out[0, len(PROMPT) :].tolist()


@pytest.mark.filterwarnings("ignore:You passed `quantization_config`")
@pytest.mark.parametrize("case", [*CASES, *EXTRA_CASES])
def test_checkpoint_loads_through_autoround_hf_as_the_in_memory_model(case, saved, monkeypatch) -> None:
    path, qm = saved(case)
    expected_logits, expected_tokens = _logits_and_tokens(qm.model.float())
    qm.model.to(torch.bfloat16)
    assert autoround_hf.installed()
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert sum(isinstance(m, FloatQuantLinear) for m in loaded.modules()) == 14
    if case == "ar_nvfp4_a16":  # the in-memory weights are e2m1 * scale rounded once to bf16
        exact = FloatQuantLinear.dequantized_weight
        monkeypatch.setattr(
            FloatQuantLinear, "dequantized_weight", lambda self, dtype: exact(self, torch.bfloat16).to(dtype)
        )
    logits, tokens = _logits_and_tokens(loaded)
    assert tokens == expected_tokens
    if case in ("ar_fpw8a16", "ar_fp8_g32", "fp8_per_channel"):  # Intel stores the scale in bf16 (~0.2% off)
        assert (logits - expected_logits).abs().max().item() < 1e-2
    else:  # MX: powers of two times E2M1 / E4M3, exact in bf16
        assert torch.equal(logits, expected_logits)


@pytest.mark.filterwarnings("ignore:You passed `quantization_config`")
def test_mixed_mx_widths_and_a_16_bit_layer_load_back_exactly(tmp_path) -> None:
    """MXFP4 with an MXFP8 layer and a 16-bit one: ``extra_config`` names them as Intel's
    integer path does, and autoround-hf gives the in-memory model's logits bit for bit."""
    model = AutoModelForCausalLM.from_pretrained(DENSE, dtype=torch.bfloat16)
    assert autoround_hf.installed()
    layers = {"model.layers.0.mlp.down_proj": {"bits": 8}, "model.layers.1.self_attn.o_proj": {"bits": 16}}
    qm = quantize(model, "MXFP4", act_bits=16, progress=False, layer_config=layers)
    path = save(qm, tmp_path / "mixed", format="auto_round")
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    assert config["extra_config"] == {
        "model.layers.0.mlp.down_proj": {"bits": 8},
        "model.layers.1.self_attn.o_proj": {"bits": 16, "data_type": "fp"},
    }
    expected, _ = _logits_and_tokens(qm.model.float(), new_tokens=1)
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert torch.equal(_logits_and_tokens(loaded, new_tokens=1)[0], expected)


def _q_proj(tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return tensors[f"model.layers.0.self_attn.q_proj.{name}"]


def test_fp8_per_channel_is_stored_as_intels_fp8_layer_holds_it(saved) -> None:
    """Plain torch: ``weight = e4m3(w / scale)`` with the float32 scale of each row, and the scale
    stored flat, ``(out,)``, in the model's dtype (Intel's ``FP8QLinear``: ``scale.view(-1)``)."""
    path, qm = saved("fp8_per_channel")
    tensors = load_safetensors_dir(path)
    quant = qm.layers["model.layers.0.self_attn.q_proj"]
    weight = qm.model.model.layers[0].self_attn.q_proj.weight.detach()
    scale = quant.scale.float().reshape(-1, 1)
    assert _q_proj(tensors, "weight_scale").dtype == torch.bfloat16
    assert torch.equal(_q_proj(tensors, "weight_scale"), scale.reshape(-1).to(torch.bfloat16))
    expected = (weight.float() / scale).to(torch.float8_e4m3fn)
    assert torch.equal(_q_proj(tensors, "weight").view(torch.uint8), expected.view(torch.uint8))
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    assert config["group_size"] == -1 and config["fmt"] == "e4m3" and "packing_format" not in config


INTEL_FP8_CHANNEL = """
import sys
from auto_round import AutoRound
AutoRound(sys.argv[1], scheme="FPW8A16", group_size=-1, iters=0, disable_opt_rtn=True, device_map="cpu",
          disable_model_free=True).quantize_and_save(sys.argv[2], format="auto_round")
"""


@pytest.mark.intel
def test_fp8_per_channel_equals_intels_export_made_in_its_venv(tmp_path) -> None:
    if not INTEL_PYTHON.exists():
        pytest.skip(f"no Intel auto-round venv at {INTEL_PYTHON.parent.parent}")
    subprocess.run([str(INTEL_PYTHON), "-c", INTEL_FP8_CHANNEL, str(DENSE), str(tmp_path)], check=True)
    (theirs_dir,) = {p.parent for p in tmp_path.rglob("config.json")}
    theirs = load_safetensors_dir(theirs_dir)
    # Intel works in bf16 where the CPU has AVX512-BF16, else in float32 (its amp check): ours
    # starts from the same dtype, read off a tensor Intel leaves unquantized.
    working = theirs["model.norm.weight"].dtype
    path = save(_quantize("fp8_per_channel", dtype=working), tmp_path / "ours" / "ckpt", format="auto_round")
    mine = load_safetensors_dir(path)
    assert sorted(mine) == sorted(theirs)
    for name, tensor in theirs.items():
        assert mine[name].dtype == tensor.dtype and mine[name].shape == tensor.shape, name
        if tensor.element_size() == 1 and tensor.is_floating_point():
            assert torch.equal(mine[name].view(torch.uint8), tensor.view(torch.uint8)), name
        else:
            assert torch.equal(mine[name], tensor), name
    ours_cfg, intel_cfg = (
        json.loads((d / "config.json").read_text())["quantization_config"] for d in (path, theirs_dir)
    )
    for key in OWN_KEYS:
        assert ours_cfg.pop(key) and intel_cfg.pop(key)
    # Intel records ``"amp": false`` where it turned its bf16 amp off (CPUs without AVX512-BF16):
    # a note on how it ran, not on the tensors (equal above)
    assert intel_cfg.pop("amp", False) is False
    assert ours_cfg == intel_cfg


# --- what pre-flight accepts ----------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme",
    [
        parse_scheme("MXFP4", act_bits=16),
        parse_scheme("MXFP8", act_bits=16),
        parse_scheme("MXFP4_RCEIL", act_bits=16),
        parse_scheme("MXINT4", act_bits=16),
        parse_scheme("NVFP4", act_bits=16),
        parse_scheme("FPW8A16"),
        parse_scheme("FPW8A16", group_size=-1),
    ],
)
def test_preflight_accepts_the_written_float_schemes(scheme) -> None:
    assert check_schemes(scheme, None, "auto_round") == ("auto_round",)


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        (parse_scheme("MXFP4", act_bits=16).replace(bits=6), "mx_fp 6-bit"),
        (parse_scheme("MXINT4", act_bits=16).replace(bits=8), "mx_int 8-bit"),
        (parse_scheme("FP8_STATIC", act_dynamic=True, act_group_size=-1), "activation quantization"),
    ],
)
def test_preflight_refuses_float_schemes_not_written(scheme, message) -> None:
    with pytest.raises((SchemeError, NotImplementedError), match=message):
        check_schemes(scheme, None, "auto_round")


def test_fp8_groups_are_written_only_where_they_divide_the_width() -> None:
    scheme = parse_scheme("FPW8A16", group_size=32)
    assert check_schemes(scheme, None, "auto_round") == ("auto_round",)
    assert float_problem(scheme, 64) is None
    assert float_problem(scheme, 48) == "fp group_size 32 on 48 inputs (a partial last group)"


def test_int_packings_still_refuse_floats() -> None:
    with pytest.raises(SchemeError, match=r"'auto_round:auto_gptq'"):
        check_schemes(parse_scheme("MXFP4", act_bits=16), None, "auto_round:auto_gptq")


def test_integer_beside_float_layers_is_refused(tmp_path) -> None:
    model = AutoModelForCausalLM.from_pretrained(DENSE, dtype=torch.bfloat16)
    layer = "model.layers.0.mlp.down_proj"
    qm = quantize(model, "MXFP4", act_bits=16, progress=False, layer_config={layer: {"data_type": "int"}})
    with pytest.raises(FormatError, match=f"{layer}: int 4-bit, integer beside float layers"):
        save(qm, tmp_path / "out", format="auto_round")
    assert not (tmp_path / "out").exists()


def test_integer_beside_float_layers_is_refused_before_any_work() -> None:
    layer = "model.layers.0.mlp.down_proj"
    refusal = rf"layer_config\['{layer}'\]: int 4-bit, integer beside float layers"
    with pytest.raises(SchemeError, match=refusal):
        check_schemes(parse_scheme("MXFP4", act_bits=16), {layer: {"data_type": "int"}}, "auto_round")
