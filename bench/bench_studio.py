"""Studio benchmark: time from a click on the page to its mask drawn, measured in headless Chromium.

    python bench/bench_studio.py --clicks 20 [--cold] [--out studio-latency.json]

Starts ``vos serve`` (API + one worker) on the real Redis (REDIS_URL, default redis://127.0.0.1:6379/11) under a
private key prefix, opens the page, uploads the shipped sample (854x480, weight-free engine) and clicks on the swan
on frames spread over the video, as a user does: go to a frame, look at it, click. Each click is a new object's
first prompt (the engine's cost of a prompt grows with the object's prompted frames: that is not the page's).

While the user looks at a frame, the page asks the worker to prepare it (decode it and compute the engine's
per-frame data); each click waits until that is done, and ``prepare_ms`` (the worker's time) is how long a user
must look at a frame before the click is fast. ``--cold`` turns preparing off: each click then pays for it.

The page measures each click itself, from the mouse button's release to the next animation frame after the mask
was painted (``total``). Its parts: ``request`` (the prompt request as the page sees it), of which the API's
``server`` time (from the ``Server-Timing`` header: ``check`` the prompt's checks, ``relay`` the round trip to the
session's worker, ``worker`` the worker's part, ``engine`` the library session applying the prompt) and
``http`` the rest (HTTP, JSON, the event loop); then ``draw`` (storing the masks and painting the overlay, unless
the live stream delivered the same revision first and painted it then) and ``paint`` (until the next animation
frame). ``overlay`` is the last painting of the overlay itself (decoding the RLE and drawing), from whichever path
painted it: when the stream did, it falls inside ``http``. ``redis_and_queue`` is relay minus worker;
``worker_other`` is worker minus engine (the session log, publishing the revision, storage). Target: p50 total
<= 300 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "studio"))

from browser import chromium, click_video, missing_browser, wait_until  # noqa: E402

from api.cli import free_port  # noqa: E402
from api.client import wait_until_ready  # noqa: E402

SAMPLE = REPO / "samples" / "blackswan.mp4"
SWAN = (271.0, 319.0)  # the swan's interior on frame 0; it swims slowly, so nearby on every frame


def main() -> None:
    args = _parse_args()
    reason = missing_browser()
    if reason:
        sys.exit(f"cannot run the browser: {reason}")
    with tempfile.TemporaryDirectory(prefix="vos-bench-studio-") as tmp:
        prefix = f"vosbench-{uuid.uuid4().hex[:8]}:"
        port = free_port()
        server = _serve(Path(tmp), port, prefix, args.redis_url)
        try:
            wait_until_ready(f"http://127.0.0.1:{port}", server, timeout=120.0)
            results = _measure(f"http://127.0.0.1:{port}", args.clicks, prepare=not args.cold)
        finally:
            server.terminate()
            server.wait(30)
            client = redis.Redis.from_url(args.redis_url)
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.delete(key)
    print(json.dumps(results, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=20, help="clicks to time (default 20)")
    parser.add_argument("--cold", action="store_true", help="do not prepare frames: each click pays for it")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11"))
    parser.add_argument("--out", help="also write the results to this JSON file")
    return parser.parse_args()


def _serve(folder: Path, port: int, prefix: str, redis_url: str) -> subprocess.Popen:
    env = {**os.environ, "VOS_REDIS_URL": redis_url, "VOS_KEY_PREFIX": prefix}
    log = (folder / "serve.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "vos.cli", "serve", "--port", str(port), "--storage",
                             str(folder / "storage"), "--redis-dir", str(folder / "redis")],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def _measure(url: str, clicks: int, prepare: bool) -> dict[str, object]:
    from selenium.webdriver.common.by import By

    with chromium() as driver:
        driver.get(url + "/")
        driver.execute_script("window.studio.config.prepare = arguments[0];", prepare)
        driver.find_element(By.ID, "video-file").send_keys(str(SAMPLE))
        wait_until(lambda: driver.execute_script("return window.studio.state.session?.id"), 120, "the upload", driver)
        frames = driver.execute_script("return window.studio.state.session.video.num_frames;")
        timings, prepares = [], []
        for number in range(clicks):
            frame = (number * 7) % frames
            driver.execute_script("""const s = document.getElementById('scrubber'); s.value = arguments[0];
                                     s.dispatchEvent(new Event('input'));""", frame)
            wait_until(lambda: driver.execute_script("return document.getElementById('frame').complete;"), 10)
            if prepare:  # the user looks at the frame until the worker has prepared it
                prepares.append(wait_until(lambda: driver.execute_script(
                    "return window.studio.state.prepared.get(arguments[0]) ?? null;", frame) is not None, 120,
                    f"frame {frame} to be prepared", driver) and driver.execute_script(
                    "return window.studio.state.prepared.get(arguments[0]);", frame))
            if number:
                driver.find_element(By.ID, "add-object").click()  # each click is a new object's first prompt
            click_video(driver, SWAN[0] + (number % 3) * 4, SWAN[1])
            wait_until(lambda: driver.execute_script("return window.studio.state.latencies.length;") > number, 60,
                       f"the mask of click {number + 1}", driver)
            timings.append(driver.execute_script("return window.studio.state.lastTimings;"))
    parts = {name: [t[name] for t in timings] for name in ("total", "before_request", "request", "draw", "paint",
                                                            "overlay")}
    server = {name: [t["server"].get(name, 0.0) for t in timings] for name in ("api", "check", "relay", "worker",
                                                                                 "engine")}
    derived = {"http": [t["request"] - t["server"]["api"] for t in timings],
               "redis_and_queue": [t["server"]["relay"] - t["server"]["worker"] for t in timings],
               "worker_other": [t["server"]["worker"] - t["server"]["engine"] for t in timings]}
    return {
        "video": "samples/blackswan.mp4 (854x480)", "engine": "classical", "clicks": clicks,
        "frames_prepared": prepare, "load_average": os.getloadavg(),
        "click_to_mask_ms": _summary(parts.pop("total")),
        "breakdown_ms": {name: _summary(values) for name, values in {**parts, **server, **derived}.items()},
        "prepare_ms": _summary(prepares) if prepares else None,
        "target_p50_ms": 300,
    }


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1), "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
            "max": round(ordered[-1], 1), "mean": round(statistics.fmean(ordered), 1)}


if __name__ == "__main__":
    main()
