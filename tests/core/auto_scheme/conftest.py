"""Fixtures of the AutoScheme tests: tiny shapes, so one thread each."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Every test here runs with the shared ``one_thread`` fixture."""
