"""Tiny shapes run single-threaded: threads only add waiting on a busy machine."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Every test here runs with the shared ``one_thread`` fixture."""
