"""Service benchmark: throughput with 1 and 2 workers, time to first frame, status latency under 50 concurrent
clients, pipeline overhead, and the time from a worker's kill -9 to its job resuming elsewhere (default settings).

    python bench/bench_service.py --video ../shared/data/videos/01_dog.mp4 --frames 60 --jobs 4

Needs Redis (REDIS_URL, default redis://127.0.0.1:6379/11); uses a private key prefix and removes its keys.
Starts its own API (``vos serve --no-worker``, so with the service's limits) and Celery workers (solo pool) as
subprocesses. The latency clients are a minimal HTTP/1.1 keep-alive client, so on a small machine the client's
own request parsing does not dominate what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx

from vos.engine import create_engine
from vos.prompts import parse_prompts
from vos.tracker import track
from vos.video import open_video
from workers.core.settings import ServiceSettings
from workers.core.store import JobStore


def main() -> None:
    args = _parse_args()
    with tempfile.TemporaryDirectory(prefix="vos-bench-") as tmp:
        video = _cut_video(Path(args.video), Path(tmp) / "bench.mp4", args.frames, args.width)
        scale = args.width / 1280
        prompts = [{"object_id": 1, "points": [{"x": args.point[0] * scale, "y": args.point[1] * scale}]}]
        settings = ServiceSettings(redis_url=args.redis, key_prefix=f"vosbench-{uuid.uuid4().hex[:6]}:",
                                   storage_url=str(Path(tmp) / "storage"))
        baseline = _engine_baseline(video, prompts, args.engine)
        print(f"video: {args.frames} frames at {args.width} px wide; engine {args.engine!r} in-process: "
              f"{baseline['wall_s']:.2f} s wall (decode + compute), {baseline['compute_s']:.2f} s compute")
        try:
            _run(args, settings, video, prompts, baseline, Path(tmp))
        finally:
            _drop_keys(settings)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", default=str(Path(__file__).resolve().parents[2] / "shared/data/videos/01_dog.mp4"))
    parser.add_argument("--frames", type=int, default=60, help="frames of the video to use")
    parser.add_argument("--width", type=int, default=640, help="downscale to this width (keeps the aspect ratio)")
    parser.add_argument("--point", type=float, nargs=2, default=(600.0, 430.0),
                        help="click on the object, 1280x720 coords")
    parser.add_argument("--jobs", type=int, default=4, help="concurrent jobs per throughput run")
    parser.add_argument("--engine", default="classical")
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11"))
    return parser.parse_args()


def _run(args: argparse.Namespace, settings: ServiceSettings, video: Path, prompts: list, baseline: dict,
         tmp: Path) -> None:
    url, server = _start_server(settings)
    workers: list[subprocess.Popen] = []
    try:
        workers.append(_start_worker(settings, tmp))
        _one_job(url, video, prompts, args.engine)  # warm-up: the worker imports and builds its engine once
        single = [_one_job(url, video, prompts, args.engine, overlay) for overlay in (True, False)]
        for label, job in zip(("with overlay", "no overlay"), single):
            print(f"single job ({label}): end-to-end {job['e2e_s']:.2f} s, worker run {job['run_s']:.2f} s, "
                  f"first frame after {job['first_frame_s']:.2f} s; overhead vs in-process engine: "
                  f"{100 * (job['e2e_s'] / baseline['wall_s'] - 1):+.1f} % end-to-end, "
                  f"{100 * (job['run_s'] / baseline['wall_s'] - 1):+.1f} % worker run")
        for count in (1, 2):
            while len(workers) < count:
                workers.append(_start_worker(settings, tmp))
            _throughput(url, video, prompts, args.engine, args.jobs, count)
        _latency(url, single[0]["id"])
        _kill_and_resume(url, video, prompts, args.engine, settings, workers)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        server.terminate()
        server.wait(30)


def _engine_baseline(video: Path, raw_prompts: list, engine_name: str) -> dict[str, float]:
    engine = create_engine(engine_name)
    prompts = parse_prompts(raw_prompts)
    with open_video(video) as source:
        list(track(source, engine, prompts))  # warm-up: imports, first-call allocations
    with open_video(video) as source:
        start = time.perf_counter()
        compute = sum(result.seconds for result in track(source, engine, prompts))
        return {"wall_s": time.perf_counter() - start, "compute_s": compute}


def _one_job(url: str, video: Path, prompts: list, engine: str, overlay: bool = True) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=600) as client:
        start = time.perf_counter()
        job = client.post("/v1/jobs", files={"video": (video.name, video.read_bytes(), "video/mp4")},
                          data={"prompts": json.dumps(prompts), "engine": engine,
                                "overlay": str(overlay).lower()}).json()
        first = None
        with client.stream("GET", f"/v1/jobs/{job['id']}/frames", headers={"Accept": "application/x-ndjson"}) as stream:
            for line in stream.iter_lines():
                if line and first is None:
                    first = time.perf_counter() - start
                if line.startswith('{"end"'):
                    assert json.loads(line)["end"]["state"] == "succeeded", line
        end = time.perf_counter() - start
        timings = client.get(f"/v1/jobs/{job['id']}").json()["timings"]
    return {"id": job["id"], "e2e_s": end, "first_frame_s": first, "run_s": timings["running_s"]}


def _throughput(url: str, video: Path, prompts: list, engine: str, jobs: int, workers: int) -> None:
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    threads = [threading.Thread(target=lambda: results.append(_one_job(url, video, prompts, engine)))
               for _ in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    first = sorted(r["first_frame_s"] for r in results)
    print(f"{workers} worker(s), {jobs} concurrent jobs: {60 * jobs / elapsed:.1f} jobs/min ({elapsed:.1f} s); "
          f"time to first frame min {first[0]:.2f} s, median {statistics.median(first):.2f} s, max {first[-1]:.2f} s")


def _latency(url: str, job_id: str, concurrency: int = 50, rounds: int = 20, warmup: int = 3) -> None:
    """``concurrency`` keep-alive connections each send one GET per round, all at once; after ``warmup`` rounds,
    every request's time from sending to the last body byte is a sample."""
    host, port = url.removeprefix("http://").split(":")
    request = f"GET /v1/jobs/{job_id} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    async def connection(starts: list[asyncio.Event], done: asyncio.Queue) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for start in starts:
            await start.wait()
            begin = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            await done.put(time.perf_counter() - begin)
        writer.close()

    async def measure() -> list[float]:
        starts = [asyncio.Event() for _ in range(warmup + rounds)]
        done: asyncio.Queue = asyncio.Queue()
        clients = [asyncio.create_task(connection(starts, done)) for _ in range(concurrency)]
        samples = []
        for number, start in enumerate(starts):
            start.set()
            times = [await done.get() for _ in range(concurrency)]
            if number >= warmup:
                samples += times
        await asyncio.gather(*clients)
        return samples

    samples = sorted(asyncio.run(measure()))
    p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99) - 1]
    print(f"GET /v1/jobs/{{id}} with {concurrency} concurrent clients ({len(samples)} requests): "
          f"p50 {1000 * p50:.1f} ms, p99 {1000 * p99:.1f} ms, max {1000 * samples[-1]:.1f} ms")


def _kill_and_resume(url: str, video: Path, prompts: list, engine: str, settings: ServiceSettings,
                     workers: list[subprocess.Popen]) -> None:
    """kill -9 the worker running a job; time until the status says retrying and until another worker runs it."""
    store = JobStore(settings)
    with httpx.Client(base_url=url, timeout=60) as client:
        job = client.post("/v1/jobs", files={"video": (video.name, video.read_bytes(), "video/mp4")},
                          data={"prompts": json.dumps(prompts), "engine": engine, "overlay": "false"}).json()
        status = _poll(client, job["id"], lambda s: s["frames_done"] >= 3)
        holder = store.get(job["id"]).worker
        victim = next(w for w in workers if holder == f"{socket.gethostname()}:{w.pid}")
        victim.kill()
        killed = time.perf_counter()
        _poll(client, job["id"], lambda s: s["state"] == "retrying" or s["attempts"] > 1)
        retrying_s = time.perf_counter() - killed
        _poll(client, job["id"], lambda s: s["state"] == "running" and s["attempts"] > 1)
        resumed_s = time.perf_counter() - killed
        final = _poll(client, job["id"], lambda s: s["state"] in ("succeeded", "failed", "cancelled"))
    workers.remove(victim)
    print(f"kill -9 of the worker at frame {status['frames_done']} (defaults: lease {settings.lease_s:g} s, reaper "
          f"every {settings.reaper_interval_s:g} s): status 'retrying' after {retrying_s:.1f} s, resumed on another "
          f"worker after {resumed_s:.1f} s; job {final['state']} with {final['attempts']} attempts")


def _poll(client: httpx.Client, job_id: str, predicate: Any, timeout: float = 600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/v1/jobs/{job_id}").json()
        if predicate(status):
            return status
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} never reached the expected state: {status}")


# ---------------------------------------------------------------------------------------------- setup


def _cut_video(source: Path, target: Path, frames: int, width: int) -> Path:
    import av
    import cv2

    with av.open(str(source)) as reader, av.open(str(target), "w") as writer:
        stream_in = reader.streams.video[0]
        height = round(stream_in.codec_context.height * width / stream_in.codec_context.width / 2) * 2
        out = writer.add_stream("libx264", rate=Fraction(float(stream_in.average_rate)).limit_denominator(1001))
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        for index, frame in enumerate(reader.decode(video=0)):
            if index >= frames:
                break
            image = cv2.resize(frame.to_ndarray(format="rgb24"), (width, height), interpolation=cv2.INTER_AREA)
            for packet in out.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                writer.mux(packet)
        for packet in out.encode():
            writer.mux(packet)
    return target


def _start_server(settings: ServiceSettings) -> tuple[str, subprocess.Popen]:
    """uvicorn in its own process, so the benchmark's clients do not share the server's interpreter."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "vos.cli", "serve", "--no-worker", "--port", str(port)],
                              env={**_env(settings), "VOS_HTTP_KEEP_ALIVE_S": "30"}, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            httpx.get(f"{url}/healthz").raise_for_status()
            return url, server
        except httpx.HTTPError:
            time.sleep(0.1)


def _env(settings: ServiceSettings) -> dict[str, str]:
    return {**os.environ, "VOS_REDIS_URL": settings.redis_url, "VOS_KEY_PREFIX": settings.key_prefix,
            "VOS_STORAGE_URL": settings.storage_url}


def _start_worker(settings: ServiceSettings, tmp: Path) -> subprocess.Popen:
    store = JobStore(settings)
    before = store.live_workers()["cpu"]
    env = _env(settings)
    log = (tmp / f"worker-{uuid.uuid4().hex[:4]}.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "solo",
                                "--concurrency", "1", "-Q", "cpu", "--without-gossip", "--without-mingle",
                                "-n", f"bench-{uuid.uuid4().hex[:6]}@%h"], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    while store.live_workers()["cpu"] <= before:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}; see {log.name}")
        time.sleep(0.1)
    return process


def _drop_keys(settings: ServiceSettings) -> None:
    client = JobStore(settings).redis
    for key in client.scan_iter(match=f"{settings.key_prefix}*", count=1000):
        client.delete(key)


if __name__ == "__main__":
    main()
