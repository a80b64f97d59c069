"""The engines of a worker process: one per engine configuration, shared by its jobs and its sessions (engines hold
weights and configuration, never a video's state), and the default engine built as the worker starts.

Building the weight-free engine the first time imports torch, about a second on a 2-core CPU. Built on demand, that
second fell on the first click of the first session a fresh worker served (``bench/bench_studio.py --cold``: 1.46 s
against a p50 of 265 ms); built at start-up, in the background, it falls on no one."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from celery.signals import worker_ready

from vos.engine import DEFAULT_ENGINE, Engine, create_engine

log = logging.getLogger(__name__)
_building = threading.Lock()  # an engine is built once, even when a job, a session and the warm-up ask at once


def shared_engine(name: str, options: Mapping[str, Any]) -> Engine:
    """This process's engine ``name`` with ``options``, built on first use."""
    with _building:
        return _engine(name, json.dumps(dict(options), sort_keys=True))


@lru_cache(maxsize=4)
def _engine(name: str, options_json: str) -> Engine:
    return create_engine(name, **json.loads(options_json))


def warm_up(name: str = DEFAULT_ENGINE) -> threading.Thread:
    """Build engine ``name`` (default options) in a background thread, so that no request waits for it."""
    thread = threading.Thread(target=_build, args=(name,), name="vos-warm-up", daemon=True)
    thread.start()
    return thread


def _build(name: str) -> None:
    begin = time.perf_counter()
    try:
        shared_engine(name, {})
    except Exception:  # noqa: BLE001 - the first request builds it again and reports what fails
        log.warning("could not build the %s engine ahead of requests", name, exc_info=True)
        return
    log.info("%s engine ready in %.2f s", name, time.perf_counter() - begin)


@worker_ready.connect
def _warm_up_on_start(**_: object) -> None:
    warm_up()
