"""Every format we write loads back in its consumers and computes the quantized model's logits.

GPTQ / AWQ / auto_round variants: core's packed and dense loaders and transformers through
autoround-hf (transformers' own GPTQ/AWQ paths need gptqmodel, not installed here).
``llm_compressor``: transformers' compressed-tensors quantizer and compressed-tensors' own
unpacking and dequantization (autoround does not read that format). The reference is the
quantized model in memory, its 16-bit tensors passed through float16 where the format saves
float32 ones as float16 (Intel's GPTQ and AWQ exports do).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import autoround
from autoround.errors import FormatError
from autoround.formats import FORMATS
from autoround.loading import load_dense
from autoround.schemes import parse_scheme
from autoround_hf import AutoRoundConfig

IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4, 40, 90]])
READ_BY_AUTOROUND = ["auto_round", "auto_round:auto_gptq", "auto_round:auto_awq", "auto_gptq", "auto_awq"]
#: Scheme arguments per case (the tiny llama is 96 and 160 wide: whole groups of 32).
CASES: dict[str, dict[str, Any]] = {
    "W4A16G32": {"scheme": "W4A16G32"},
    "W4A16G32 asym": {"scheme": "W4A16G32", "sym": False},
    "W2A16G32": {"scheme": "W2A16G32"},
    "W3A16G32 asym": {"scheme": "W3A16G32", "sym": False},
    "W8A16 per channel": {"scheme": "W8A16", "group_size": -1},
    "W4A16G32, o_proj 16-bit": {"scheme": "W4A16G32", "layer_config": {"self_attn.o_proj": {"bits": 16}}},
    "W4A16G32 + down_proj W8, o_proj 16-bit": {
        "scheme": "W4A16G32",
        "layer_config": {"mlp.down_proj": {"bits": 8}, "model.layers.1.self_attn.o_proj": {"bits": 16}},
    },
}

pytestmark = pytest.mark.filterwarnings("ignore:You passed `quantization_config`")


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.float()


def _reference(qm: Any, fmt: str) -> torch.nn.Module:
    """The quantized model as the checkpoint stores it: float32 16-bit tensors rounded to float16
    where the format saves them so."""
    model = copy.deepcopy(qm.model)
    if fmt in ("auto_gptq", "auto_awq", "auto_round:auto_awq"):
        quantized = {f"{name}.weight" for name in qm.layers}
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name not in quantized:
                    param.copy_(param.to(torch.float16).float())
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Callable[[str, str], tuple[Path, Any]]:
    from tiny_models import TINY_LLAMA, build_model
    from transformers import LlamaConfig

    made: dict[tuple[str, str], tuple[Path, Any]] = {}

    def make(fmt: str, case: str) -> tuple[Path, Any]:
        if (fmt, case) not in made:
            kwargs = dict(CASES[case])
            qm = autoround.quantize(
                build_model(LlamaConfig(**TINY_LLAMA)), kwargs.pop("scheme"), progress=False, **kwargs
            )
            made[fmt, case] = autoround.save(qm, tmp_path_factory.mktemp("export") / "ckpt", format=fmt), qm
        return made[fmt, case]

    return make


LOADERS: dict[str, Callable[[Path], torch.nn.Module]] = {
    "load_quantized": lambda path: autoround.load_quantized(path, dtype=torch.float32, backend="torch"),
    "load_dense": lambda path: load_dense(path, dtype=torch.float32),
    "transformers + autoround-hf": lambda path: AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, quantization_config=AutoRoundConfig(backend="torch")
    ),
}


def _stored(fmt: str, case: str) -> bool:
    """Whether ``fmt`` stores every scheme ``case`` names (AWQ: 4-bit only)."""
    kwargs = dict(CASES[case])
    layer_config = kwargs.pop("layer_config", {})
    default = parse_scheme(kwargs.pop("scheme"), **kwargs)
    named = [default, *(default.replace(**fields) for fields in layer_config.values())]
    return all(FORMATS[fmt].stores(s) for s in named if s.is_quantized)


PAIRS = [(fmt, case) for fmt in READ_BY_AUTOROUND for case in CASES if _stored(fmt, case)]


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize(("fmt", "case"), PAIRS)
def test_gptq_awq_and_auto_round_exports_load_to_the_quantized_logits(exported, fmt, case, loader) -> None:
    path, qm = exported(fmt, case)
    loaded = LOADERS[loader](path)
    torch.testing.assert_close(_logits(loaded), _logits(_reference(qm, fmt)), atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("case", list(CASES))
def test_compressed_tensors_dequantizes_our_llm_compressor_export_to_the_quantized_weights(
    exported, case
) -> None:
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import dequantize

    path, qm = exported("llm_compressor", case)
    tensors = load_file(path / "model.safetensors")
    groups = json.loads((path / "config.json").read_text())["quantization_config"]["config_groups"]
    for name in qm.layers:
        group = next(g for g in groups.values() if g["targets"] in (["Linear"],) or name in g["targets"])
        args = QuantizationArgs(**group["weights"])
        shape = tuple(tensors[f"{name}.weight_shape"].tolist())
        codes = unpack_from_int32(tensors[f"{name}.weight_packed"], args.num_bits, shape)
        scale = tensors[f"{name}.weight_scale"].float()
        zero = None
        if not args.symmetric:
            zero = unpack_from_int32(
                tensors[f"{name}.weight_zero_point"], args.num_bits, scale.shape, packed_dim=0
            )
        weight = dequantize(codes, scale, zero, args, dtype=torch.float32)
        assert torch.equal(weight, qm.model.get_submodule(name).weight), name


@pytest.mark.parametrize("case", list(CASES))
def test_transformers_loads_our_llm_compressor_export_through_compressed_tensors(exported, case) -> None:
    path, qm = exported("llm_compressor", case)
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert type(loaded.hf_quantizer).__name__ == "CompressedTensorsHfQuantizer"
    torch.testing.assert_close(_logits(loaded), _logits(qm.model), atol=2e-4, rtol=2e-4)


def test_a_zero_point_of_zero_is_refused_for_gptqs_convention_before_anything_is_written(
    tmp_path, tiny_llama
) -> None:
    qm = autoround.quantize(tiny_llama, "W4A16G32", sym=False, progress=False)
    name = next(iter(qm.layers))
    qm.layers[name].zero[0, 0] = 0  # a group whose values are all >= 0
    for fmt in ("auto_gptq", "auto_round:auto_gptq"):
        with pytest.raises(FormatError, match=rf"{name}: 1 group\(s\) have zero point 0.*auto_round"):
            autoround.save(qm, tmp_path / fmt.replace(":", "-"), format=fmt)
    assert list(tmp_path.iterdir()) == []
    autoround.save(qm, tmp_path / "ok", format="auto_round,auto_awq")  # zero points stored as they are
