"""What the model-free tests compare against: the model-based RTN checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import autoround
from autoround.io import load_safetensors_dir


def model_based(model: torch.nn.Module, output: Path, scheme: str = "W4A16", **kwargs) -> Path:
    """The reference: RTN on the loaded model (``autoround.quantize``), saved as ``auto_round``."""
    return autoround.save(autoround.quantize(model, scheme, progress=False, **kwargs), output)


def quantization_config(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())["quantization_config"]


def assert_same_checkpoint(expected: Path, actual: Path) -> None:
    """Every tensor equal in name, dtype and value; the same ``quantization_config``."""
    want, got = load_safetensors_dir(expected), load_safetensors_dir(actual)
    assert sorted(got) == sorted(want)
    differing = [k for k in want if want[k].dtype != got[k].dtype or not torch.equal(want[k], got[k])]
    assert differing == []
    assert quantization_config(actual) == quantization_config(expected)
    assert json.loads((actual / "quantization_config.json").read_text()) == quantization_config(expected)
