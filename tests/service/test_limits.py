"""Connection-level limits and settings: the API key is checked before a body is read, stalled or trickling bodies
are cut off, idle keep-alive connections close, floods get 503s, and settings that contradict each other (or an
empty API key) are refused at start-up. Raw sockets, so the test controls exactly what the client sends."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from service_conftest import api_server

from api.cli import free_port
from workers.core.settings import ServiceSettings
from workers.core.storage import UPLOAD_PREFIX, remove_stale_upload_dirs


@pytest.fixture(scope="module")
def guarded(settings):
    limited = settings.model_copy(update={"api_key": "s3cret", "http_body_timeout_s": 2.0, "http_keep_alive_s": 1.0,
                                          "http_max_concurrency": 6, "http_min_body_bytes_per_s": 1000})
    with api_server(limited) as running:
        yield running


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    return sock


def upload_head(length: int, key: str | None = None) -> bytes:
    lines = ["POST /v1/jobs HTTP/1.1", "Host: test", f"Content-Length: {length}",
             "Content-Type: multipart/form-data; boundary=x"]
    if key:
        lines.append(f"X-API-Key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, str]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def test_no_api_key_is_refused_before_the_body_is_sent(guarded):
    with connect(guarded.url) as sock:
        sock.sendall(upload_head(100 << 20))  # announces 100 MB and sends none of it
        status, body = read_response(sock)
    assert status == 401 and "X-API-Key" in body


def test_declared_oversized_body_is_refused_at_once(guarded):
    with connect(guarded.url) as sock:
        sock.sendall(upload_head(1 << 40, key="s3cret"))
        status, body = read_response(sock)
    assert status == 413 and "larger than the limit of" in body and "bytes" in body


def test_a_stalled_body_is_cut_off(guarded):
    with connect(guarded.url) as sock:
        sock.sendall(upload_head(10_000, key="s3cret") + b"--x\r\n")
        started = time.monotonic()
        status, body = read_response(sock)
    assert status == 408 and "stalled" in body
    assert time.monotonic() - started < 10


def test_a_trickling_body_is_cut_off(guarded):
    with connect(guarded.url) as sock:
        sock.sendall(upload_head(10_000, key="s3cret") + b'--x\r\nContent-Disposition: form-data; name="video"; '
                     b'filename="a.mp4"\r\n\r\n')
        sock.settimeout(0.3)  # well under the 2 s body timeout, so only the rate rule can cut it off
        deadline = time.monotonic() + 20
        answer = b""
        while time.monotonic() < deadline and not answer:
            sock.sendall(b"v")  # a byte of the video now and then, as in the drill
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
        sock.settimeout(5)
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"too slowly" in answer


def test_idle_keep_alive_connections_are_closed(guarded):
    with connect(guarded.url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        status, _ = read_response(sock)
        time.sleep(2.5)  # keep-alive is 1 s in this server
        sock.settimeout(5)
        assert status == 200 and sock.recv(100) == b""


def test_a_connection_that_sends_nothing_is_closed(guarded):
    with connect(guarded.url) as sock:
        started = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(100) == b""
    assert time.monotonic() - started < 5  # keep-alive is 1 s in this server


def test_a_stalled_request_head_is_closed(guarded):
    with connect(guarded.url) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: test\r\nX-API-")
        started = time.monotonic()
        sock.settimeout(15)
        assert sock.recv(100) == b""
    assert time.monotonic() - started < 8  # the head timeout is the 2 s body timeout in this server


def test_connections_beyond_the_limit_get_503(settings):
    # The requests held in flight must outlast the check whatever the host's speed: with the other tests' 2 s body
    # timeout, a slow moment cut some of them off first and the extra request got through (CI, 2026-12-08).
    patient = settings.model_copy(update={"api_key": "s3cret", "http_body_timeout_s": 60.0, "http_max_concurrency": 6})
    with api_server(patient) as running:
        answer = _answer_beyond_the_limit(running.url, in_flight=6)
    assert answer.startswith(b"HTTP/1.1 503")


def _answer_beyond_the_limit(url: str, in_flight: int) -> bytes:
    """What a health check gets while ``in_flight`` uploads have sent only the start of their bodies."""
    held = [connect(url) for _ in range(in_flight)]
    try:
        for sock in held:
            sock.sendall(upload_head(10_000, key="s3cret") + b"--x\r\n")
        with connect(url) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            extra.settimeout(10)
            return extra.recv(65536)
    finally:
        for sock in held:
            sock.close()


def test_redis_down_gives_503_without_its_address(settings):
    port = free_port()  # nothing listens there
    unreachable = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0", "redis_retry_s": 0.5})
    from api.app import create_app

    with TestClient(create_app(unreachable)) as client:
        ready = client.get("/readyz")
        status = client.get("/v1/jobs/abcdefghijklmnopqrstuv")
    for response in (ready, status):
        assert response.status_code == 503
        assert str(port) not in response.text and "127.0.0.1" not in response.text
        assert "unavailable" in response.json()["detail"]


def test_empty_api_key_is_refused():
    with pytest.raises(ValidationError, match="VOS_API_KEY is set but empty"):
        ServiceSettings(api_key="")
    env = {**os.environ, "VOS_API_KEY": "", "VOS_REDIS_URL": "redis://127.0.0.1:1/0"}
    started = subprocess.run([sys.executable, "-m", "vos.cli", "serve", "--port", str(free_port())], env=env,
                             capture_output=True, text=True, timeout=120)
    assert started.returncode == 2 and "VOS_API_KEY is set but empty" in started.stderr


@pytest.mark.parametrize("values, fragment", [
    ({"visibility_timeout_s": 600.0}, "visibility_timeout_s must exceed task_time_limit_s"),
    ({"task_time_limit_s": 3000.0, "visibility_timeout_s": 3100.0}, "task_time_limit_s must exceed"),
    ({"lease_s": 3.0}, "lease_s must be at least 1.5 x redis_timeout_s"),
])
def test_contradictory_settings_are_refused(values, fragment):
    with pytest.raises(ValidationError, match=fragment):
        ServiceSettings(**values)


def test_default_settings_resume_a_lost_job_within_a_minute():
    defaults = ServiceSettings()
    # Lost lease + one reaper round + one heartbeat of slack: the job is queued again within this bound.
    assert defaults.lease_s + defaults.reaper_interval_s + defaults.renew_interval_s < 60


def dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def test_upload_scratch_folders_of_dead_api_processes_are_removed(tmp_path: Path):
    dead = dead_pid()
    stale = tmp_path / f"{UPLOAD_PREFIX}{dead}-abc"
    live = tmp_path / f"{UPLOAD_PREFIX}{os.getpid()}-def"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "video.mp4").write_bytes(b"\0" * 1000)
    assert remove_stale_upload_dirs(tmp_path) == [stale]
    assert not stale.exists() and live.exists()


def test_the_api_removes_the_upload_folders_of_an_api_that_died(settings):
    """An API killed during an upload to remote storage leaves its local copy; the next API start removes it."""
    from api.app import create_app

    stale = Path(tempfile.gettempdir()) / f"{UPLOAD_PREFIX}{dead_pid()}-killed"
    stale.mkdir()
    (stale / "video.mp4").write_bytes(b"\0" * 1000)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
    assert not stale.exists()
