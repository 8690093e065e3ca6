"""Bad input is refused with the bad value and what is allowed, before any tuning."""

from __future__ import annotations

import pytest
import torch
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme, preset_name_to_scheme
from pydantic import ValidationError

from autoround.schemes import Scheme
from autoround_llmc import SignRoundModifier
from autoround_llmc.inputs import RecordedInputs
from autoround_llmc.schemes import scheme_of

pytestmark = pytest.mark.integration


def _weights(**fields) -> QuantizationScheme:
    args = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 64, **fields}
    return QuantizationScheme(targets=["Linear"], weights=QuantizationArgs(**args))


def test_weight_only_int_schemes_translate_to_autoround_schemes() -> None:
    assert scheme_of(preset_name_to_scheme("W4A16", ["Linear"]), "l") == Scheme(4, 128, True, "int")
    assert scheme_of(preset_name_to_scheme("W4A16_ASYM", ["Linear"]), "l") == Scheme(4, 128, False, "int")
    assert scheme_of(_weights(num_bits=2, group_size=32), "l") == Scheme(2, 32, True, "int")
    channel = _weights(strategy="channel", group_size=None)
    assert scheme_of(channel, "l") == Scheme(4, -1, True, "int")


@pytest.mark.parametrize(
    ("scheme", "message"),
    [
        (preset_name_to_scheme("W8A8", ["Linear"]), "input_activations"),
        (_weights(type="float", num_bits=8), "weights type 'float'"),
        (_weights(strategy="tensor", group_size=None), "strategy 'tensor'"),
        (_weights(actorder="weight"), "actorder='weight'"),
        (QuantizationScheme(targets=["Linear"]), "quantizes no weights"),
    ],
)
def test_unsupported_schemes_are_refused_naming_the_layer_and_setting(scheme, message) -> None:
    with pytest.raises(ValueError, match=message) as info:
        scheme_of(scheme, "model.layers.0.mlp.up_proj")
    assert "model.layers.0.mlp.up_proj" in str(info.value)


@pytest.mark.parametrize(("knob", "value"), [("iters", 0), ("batch_size", -1), ("lr", 50.0)])
def test_bad_signround_knobs_are_refused_at_construction(knob, value) -> None:
    with pytest.raises(ValidationError, match=knob):
        SignRoundModifier(scheme="W4A16", **{knob: value})


def test_targets_outside_the_decoder_blocks_must_be_ignored(load_llama, run_oneshot) -> None:
    with pytest.raises(ValueError, match=r"outside them: \['lm_head'\].*ignore"):
        run_oneshot(load_llama(), [SignRoundModifier(scheme="W4A16", iters=1)])


def test_a_modifier_without_a_scheme_is_refused(load_llama, run_oneshot) -> None:
    with pytest.raises(ValueError, match="needs a quantization scheme"):
        run_oneshot(load_llama(), [SignRoundModifier(iters=1)])


def test_samples_of_different_lengths_are_refused() -> None:
    recorded = RecordedInputs()
    recorded.add("model.layers.0", (torch.zeros(1, 8, 4),), {})
    with pytest.raises(ValueError, match="different lengths"):
        recorded.add("model.layers.0", (torch.zeros(1, 6, 4),), {})


def test_batched_arguments_shared_by_all_samples_are_kept_once() -> None:
    recorded = RecordedInputs()
    cos = torch.randn(1, 8, 2).expand(3, 8, 2)
    recorded.add(
        "b", (torch.zeros(3, 8, 4),), {"position_embeddings": (cos, cos), "past_key_values": object()}
    )
    assert set(recorded.kwargs) == {"position_embeddings"}
    assert recorded.kwargs["position_embeddings"][0].shape == (1, 8, 2)
    padded = torch.ones(3, 8)
    padded[1, :2] = 0
    with pytest.raises(ValueError, match="attention_mask"):
        RecordedInputs().add("b", (torch.zeros(3, 8, 4),), {"attention_mask": padded})
