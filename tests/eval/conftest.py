"""Fixtures of the evaluation tests: engines with known outputs, registered for the duration of a test."""

from __future__ import annotations

import pytest
from layouts import TEST_ENGINES, RepeatMaskEngine

from vos import engine


@pytest.fixture
def test_engines(monkeypatch: pytest.MonkeyPatch) -> type[RepeatMaskEngine]:
    """Registers ``repeat`` and ``shifted`` (layouts.py) and zeroes the step counter; returns the counter's class."""
    for name, target in TEST_ENGINES.items():
        monkeypatch.setitem(engine._ENGINES, name, target)
    monkeypatch.setattr(RepeatMaskEngine, "steps", 0)
    return RepeatMaskEngine
