"""Choosing a backend: by what serves the layer, overridable, with errors that say what would."""

from __future__ import annotations

import pytest
import torch

from autoround.backends import BACKENDS, refusals, register, select
from autoround.backends.torch_backend import TorchBackend
from autoround.errors import UnsupportedLayerError
from autoround.schemes import Scheme

W4 = Scheme(bits=4, group_size=32)


def test_cpu_layers_get_the_cpu_backend() -> None:
    assert select(W4, (64, 32), "cpu").name == "cpu"


def test_layers_the_cpu_backend_refuses_fall_back_to_torch() -> None:
    assert select(Scheme(bits=4, group_size=16), (64, 32), "cpu").name == "torch"


def test_requested_backend_wins() -> None:
    assert select(W4, (64, 32), "cpu", requested="torch").name == "torch"


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'fast'.*'torch'"):
        select(W4, (64, 32), "cpu", requested="fast")


def test_a_backend_that_cannot_serve_says_why_and_what_would() -> None:
    with pytest.raises(
        UnsupportedLayerError, match=r"group size 16 is not a multiple of 32.*would: \[.*'torch'\]"
    ):
        select(Scheme(bits=4, group_size=16), (64, 32), "cpu", requested="cpu")


def test_a_scheme_no_backend_serves_lists_every_reason() -> None:
    with pytest.raises(UnsupportedLayerError, match=r"no backend serves.*cpu: bits=5.*torch: bits=5"):
        select(Scheme(bits=5, group_size=32), (64, 32), "cpu")


def test_refusals_answer_for_every_backend() -> None:
    assert set(refusals(W4, (64, 32), torch.device("cpu"))) == set(BACKENDS)


def test_a_registered_backend_joins_the_choice() -> None:
    class Mine(TorchBackend):
        name = "mine"

    saved = dict(BACKENDS)
    try:
        register(Mine(), first=True)
        assert next(iter(BACKENDS)) == "mine"
        assert select(W4, (64, 32), "cpu").name == "mine"
    finally:
        BACKENDS.clear()
        BACKENDS.update(saved)
