"""Recipes: SignRoundModifier is found by name in YAML (after ``import autoround_llmc``), the
checkpoint's own recipe.yaml re-creates it, and it composes with a smoothing modifier before it."""

from __future__ import annotations

import pytest
import torch
from compressed_tensors.quantization.lifecycle.forward import fake_quantize
from llmcompressor.modifiers import ModifierFactory
from llmcompressor.modifiers.autoround import AutoRoundModifier as IntelAutoRoundModifier
from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
from llmcompressor.recipe import Recipe

import autoround_llmc
from autoround_llmc import SignRoundModifier

pytestmark = pytest.mark.integration

YAML = """
quant_stage:
  quant_modifiers:
    SignRoundModifier:
      iters: 20
      batch_size: 4
      lr: 0.05
      enable_minmax_tuning: false
      scheme: W4A16
      ignore: ["lm_head"]
"""


def test_a_yaml_recipe_names_the_modifier_with_its_knobs() -> None:
    (modifier,) = Recipe.create_instance(YAML).modifiers
    assert isinstance(modifier, SignRoundModifier)
    assert (modifier.iters, modifier.batch_size, modifier.lr, modifier.enable_minmax_tuning) == (
        20,
        4,
        0.05,
        False,
    )
    assert modifier.settings.lr_for(4) == 0.05


def test_registering_is_idempotent_and_leaves_llm_compressors_autoround_modifier_alone() -> None:
    autoround_llmc.register()
    autoround_llmc.register()
    made = ModifierFactory.create(
        "SignRoundModifier", allow_registered=True, allow_experimental=False, iters=3
    )
    assert type(made) is SignRoundModifier
    theirs = ModifierFactory.create("AutoRoundModifier", allow_registered=True, allow_experimental=True)
    assert type(theirs) is IntelAutoRoundModifier


def test_oneshot_runs_a_yaml_recipe_and_the_checkpoint_recipe_recreates_it(
    tmp_path, load_llama, run_oneshot
) -> None:
    model = load_llama()
    run_oneshot(model, YAML)
    model.save_pretrained(tmp_path / "ckpt", save_compressed=True)
    (saved,) = Recipe.create_instance(str(tmp_path / "ckpt" / "recipe.yaml")).modifiers
    assert isinstance(saved, SignRoundModifier)
    assert (saved.iters, saved.lr, saved.enable_minmax_tuning, saved.ignore) == (20, 0.05, False, ["lm_head"])


def test_it_composes_after_smoothquant_and_quantizes_the_smoothed_weights(load_llama, run_oneshot) -> None:
    model = load_llama()
    norm_before = model.model.layers[0].input_layernorm.weight.detach().clone()
    signround = SignRoundModifier(scheme="W4A16", iters=20, batch_size=4, ignore=["lm_head"])
    run_oneshot(model, [SmoothQuantModifier(smoothing_strength=0.5), signround])

    assert not torch.equal(model.model.layers[0].input_layernorm.weight, norm_before), "no smoothing happened"
    assert len(signround.block_reports) == 2
    for report in signround.block_reports:
        assert report.tuned_loss < report.rtn_loss, report
    for name, module in model.named_modules():
        if name.startswith("model.layers.") and isinstance(module, torch.nn.Linear):
            args, zero = module.quantization_scheme.weights, getattr(module, "weight_zero_point", None)
            on_grid = fake_quantize(module.weight, module.weight_scale, zero, args)
            assert torch.equal(on_grid, module.weight), name
