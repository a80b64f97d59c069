"""Fixtures of the studio tests: the service tests' real Redis, workers and API server, plus sessions on them.

The service fixtures are imported from ``tests/service/conftest.py`` (not copied). Session workers are presumed
dead after 3 s of silence here, so the kill -9 test re-pins within seconds.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from studio_helpers import STUDIO_DIR, open_session

os.environ.setdefault("VOS_SESSION_WORKER_STALE_S", "3")  # read by the in-process API (it presumes workers dead)


def _service_conftest() -> Any:
    """tests/service/conftest.py, loaded once: pytest loaded it already when both folders run together."""
    if "service_conftest" not in sys.modules:
        spec = importlib.util.spec_from_file_location("service_conftest", STUDIO_DIR.parent / "service" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["service_conftest"] = module
        spec.loader.exec_module(module)
    return sys.modules["service_conftest"]


_service = _service_conftest()

settings = _service.settings
store = _service.store
workers = _service.workers
server = _service.server
videos = _service.videos
Workers = _service.Workers


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where the browser tests save screenshots: ``$ARTIFACTS/studio``, or the test's temporary folder."""
    folder = Path(os.environ["ARTIFACTS"]) / "studio" if os.environ.get("ARTIFACTS") else tmp_path / "screens"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def client(server: Any) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture
def session(client: httpx.Client) -> Iterator[dict[str, Any]]:
    created = open_session(client)
    yield created
    client.delete(f"/v1/sessions/{created['id']}")
