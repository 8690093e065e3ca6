"""What is saved is exactly what every loader reads: scheme x model x loader round trips.

Each case quantizes a tiny model (RTN; with calibration ids where the scheme's activation ranges
are calibrated), saves it in the ``auto_round`` format and loads it with core's packed loader
(``load_quantized``), core's dense loader (``load_dense``) and transformers' ``from_pretrained``
through autoround-hf. The reference is the quantized model in memory (its layers hold the
quantize-dequantized weights the checkpoint encodes, and quantize their inputs where the scheme
says so); every loader must give its logits. ``load_dense`` gives the weights only: a scheme's
activation quantization is attached to it (the in-memory model's hooks and calibrated ranges) before
comparing. The vLLM plugin's side of the suite is ``tests/vllm/test_vllm_round_trip.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

import autoround
from autoround.algorithms.act_calibration import calibrated_layers, layer_ranges
from autoround.errors import SchemeError
from autoround.formats import FORMATS
from autoround.loading import load_dense
from autoround.nn import QuantLinear, attach_act_quant
from autoround.nn.act_hooks import act_kind_of
from autoround.nn.float_linear import FloatQuantLinear
from autoround.schemes import PRESETS
from autoround_hf import AutoRoundConfig

IDS = torch.tensor([[1, 5, 9, 3, 7, 2, 11, 4, 40, 90]])
#: Calibration ids for the schemes whose activation ranges are calibrated (FP8_STATIC, NVFP4).
CALIBRATION = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))

#: Every preset the format stores (5-7 bits plan, but are refused at saving; 16 bits saves nothing).
QUANTIZING_PRESETS = sorted(name for name, scheme in PRESETS.items() if FORMATS["auto_round"].stores(scheme))

#: Per-layer choices beyond a single preset: asymmetric codes, a quantized lm_head (tied or
#: untied by the model), a mixed-bits model, a layer left in 16 bits.
VARIANTS: dict[str, dict[str, Any]] = {
    "W4A16 asym": {"scheme": "W4A16", "sym": False},
    "W3A16G32 asym": {"scheme": "W3A16G32", "sym": False},
    "W2A16G64 asym": {"scheme": "W2A16G64", "sym": False},
    "W4A16 + lm_head": {"scheme": "W4A16", "quant_lm_head": True},
    "W4A16 + lm_head W8": {"scheme": "W4A16", "layer_config": {"lm_head": "W8A16"}},
    "W4A16 + down_proj W8": {"scheme": "W4A16", "layer_config": {"mlp.down_proj": {"bits": 8}}},
    "W4A16 + o_proj 16-bit": {"scheme": "W4A16", "layer_config": {"self_attn.o_proj": {"bits": 16}}},
}
CASES = {
    **{
        name: {
            "scheme": name,
            **({"calibration": CALIBRATION} if calibrated_layers({"": PRESETS[name]}) else {}),
        }
        for name in QUANTIZING_PRESETS
    },
    **VARIANTS,
}
MODELS = ("tiny_llama", "tiny_qwen3", "tiny_qwen3_moe")  # tied head, untied head, MoE experts

pytestmark = pytest.mark.filterwarnings("ignore:You passed `quantization_config`")


def _core(path: Path) -> torch.nn.Module:
    return autoround.load_quantized(path, backend="torch")


def _hf(path: Path) -> torch.nn.Module:
    config = AutoRoundConfig(backend="torch")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, quantization_config=config)


LOADERS: dict[str, Callable[[Path], torch.nn.Module]] = {
    "load_quantized": _core,
    "load_dense": load_dense,
    "autoround-hf": _hf,
}


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.float()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Callable[[str, str, torch.nn.Module], tuple[Path, Any]]:
    """(checkpoint, quantized model) of one case, made once for all loaders."""
    made: dict[tuple[str, str], tuple[Path, Any]] = {}

    def make(model_name: str, case: str, model: torch.nn.Module) -> tuple[Path, Any]:
        if (model_name, case) not in made:
            kwargs = dict(CASES[case])
            qm = autoround.quantize(model, kwargs.pop("scheme"), progress=False, **kwargs)
            path = autoround.save(qm, tmp_path_factory.mktemp("round_trip") / "ckpt")
            made[model_name, case] = path, qm
        return made[model_name, case]

    return make


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("model_name", MODELS)
def test_every_loader_gives_the_quantized_models_logits(request, checkpoints, model_name, case, loader):
    if case == "FPW8A16" and loader == "autoround-hf":
        pytest.xfail(
            "known gap: a config passed to from_pretrained makes transformers parse the checkpoint's "
            "with its own AutoRoundConfig first, which refuses per-tensor group_size=0; loaded as "
            "stored (no config passed) it gives the logits exactly"
        )
    if case == "FP8_BLOCK" and loader == "autoround-hf":
        pytest.xfail(
            "known gap: a config passed to from_pretrained makes transformers parse the checkpoint's "
            "with its own AutoRoundConfig first, which refuses the tile group_size [128, 128]; loaded "
            "as stored (no config passed) it reads the checkpoint: tests/core/formats/"
            "test_fp8_block_auto_round.py"
        )
    path, qm = checkpoints(model_name, case, request.getfixturevalue(model_name))
    loaded = LOADERS[loader](path)
    if loader == "load_dense":  # weights only: the in-memory model's activation quantization added
        attach_act_quant(loaded, {n: q.scheme for n, q in qm.layers.items()}, layer_ranges(qm.layers))
    torch.testing.assert_close(_logits(loaded), _logits(qm.model), atol=2e-4, rtol=2e-4)
    if loader != "load_dense":
        # integer activations (INT8_W8A8, INT4: packing auto_round:fake) keep dense Linears that
        # quantize their inputs
        packed = {
            name
            for name, m in loaded.named_modules()
            if isinstance(m, (QuantLinear, FloatQuantLinear)) or act_kind_of(m) is not None
        }
        assert packed == set(qm.layers), "the packed layers are exactly the quantized ones"


@pytest.mark.parametrize("preset", ["BF16", "W16A16"])
def test_a_plan_with_nothing_to_quantize_is_refused(tiny_llama, preset):
    with pytest.raises(SchemeError, match="nothing to quantize"):
        autoround.quantize(tiny_llama, preset, progress=False)
