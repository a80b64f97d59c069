"""Fixtures of the evaluation tests: engines with known outputs, registered for the duration of a test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from layouts import TEST_ENGINES, RepeatMaskEngine

from vos.engine import register_engine, unregister_engine


@pytest.fixture
def test_engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[RepeatMaskEngine]]:
    """Registers ``repeat`` and ``shifted`` (layouts.py) and zeroes the step counter; yields the counter's class."""
    for name, target in TEST_ENGINES.items():
        register_engine(name, target)
    monkeypatch.setattr(RepeatMaskEngine, "steps", 0)
    yield RepeatMaskEngine
    for name in TEST_ENGINES:
        unregister_engine(name)
