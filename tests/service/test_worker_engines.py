"""A worker process's engines: one per configuration, shared by jobs and sessions, and the default one built as the
worker starts, so that no user's first request pays for it."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from vos.engine import DEFAULT_ENGINE, create_engine
from vos.engines.classical import ClassicalEngine
from workers import engines, sessions, tasks


@pytest.fixture
def empty_cache():
    engines._engine.cache_clear()
    yield
    engines._engine.cache_clear()


def test_jobs_and_sessions_get_the_same_engine_for_the_same_options(empty_cache) -> None:
    # Two engines of one configuration would load a SEEM checkpoint twice into one GPU.
    assert tasks.shared_engine is sessions.shared_engine is engines.shared_engine
    first = engines.shared_engine("classical", {"flow_preset": "fast", "band": 0.03})
    assert engines.shared_engine("classical", {"band": 0.03, "flow_preset": "fast"}) is first
    assert isinstance(first, ClassicalEngine) and first.options.flow_preset == "fast"
    other = engines.shared_engine("classical", {"flow_preset": "medium"})
    assert other is not first and other.options.flow_preset == "medium"


def test_an_engine_asked_for_by_many_threads_at_once_is_built_once(empty_cache, monkeypatch) -> None:
    built: list[str] = []

    def slow_create(name: str, **options: object):
        built.append(name)
        time.sleep(0.2)  # long enough for every thread to ask while the first build runs
        return create_engine(name, **options)

    monkeypatch.setattr(engines, "create_engine", slow_create)
    results = []
    threads = [threading.Thread(target=lambda: results.append(engines.shared_engine("classical", {})))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert built == ["classical"]
    assert len(results) == 4 and all(result is results[0] for result in results)


def test_warm_up_builds_the_default_engine_before_any_request(empty_cache) -> None:
    engines.warm_up().join(60)
    assert engines._engine.cache_info().currsize == 1
    hits = engines._engine.cache_info().hits
    engine = engines.shared_engine(DEFAULT_ENGINE, {})  # what the first session or job of the worker asks for
    assert engines._engine.cache_info().hits == hits + 1
    assert isinstance(engine, ClassicalEngine)


def test_a_failed_warm_up_is_logged_and_left_to_the_first_request(empty_cache, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="workers.engines"):
        engines.warm_up("no-such-engine").join(60)
    assert "could not build the no-such-engine engine" in caplog.text
    assert engines._engine.cache_info().currsize == 0
