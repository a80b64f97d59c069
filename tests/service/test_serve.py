"""``vos serve`` killed with SIGKILL: its worker and embedded Redis die with it, and a restart on the same data
folder finds the jobs (the embedded Redis keeps an append-only file)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from helpers import finished, wait_for

from api.cli import free_port
from api.client import wait_until_ready

PROMPT = [{"object_id": 1, "points": [{"x": 30, "y": 18}]}]


def start_serve(folder: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOS_") and k != "REDIS_URL"}
    log = (folder / f"serve-{time.monotonic_ns()}.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "vos.cli", "serve", "--port", str(port), "--storage",
                             str(folder / "storage"), "--redis-dir", str(folder / "redis")],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=folder)




def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    return [d for child in children(pid) for d in (child, *descendants(child))]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_killed_serve_takes_its_children_along_and_a_restart_finds_the_job(tmp_path, videos):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = start_serve(tmp_path, port)
    try:
        wait_until_ready(url, serve, timeout=180.0)
        with httpx.Client(base_url=url, timeout=60) as client:
            job = client.post("/v1/jobs", files={"video": ("tiny.mp4", videos["tiny"].read_bytes())},
                              data={"prompts": json.dumps(PROMPT), "engine": "classical", "overlay": "false"}).json()
            done = wait_for(client, job["id"], finished, timeout=120)
        assert len(children(serve.pid)) == 2  # the worker and the embedded Redis
        spawned = descendants(serve.pid)  # their own children too (a worker's embedded beat once outlived it)
        serve.send_signal(signal.SIGKILL)
        serve.wait()
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in spawned) and time.monotonic() < deadline:
            time.sleep(0.2)
        orphans = [pid for pid in spawned if alive(pid)]
    finally:
        if serve.poll() is None:
            serve.kill()
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert done["state"] == "succeeded", done
    assert orphans == []

    restarted = start_serve(tmp_path, port)
    try:
        wait_until_ready(url, restarted, timeout=180.0)
        with httpx.Client(base_url=url, timeout=60) as client:
            again = client.get(f"/v1/jobs/{job['id']}")
            masks = client.get(f"/v1/jobs/{job['id']}/results/masks.jsonl")
    finally:
        restarted.terminate()
        restarted.wait(60)
    assert again.status_code == 200 and again.json()["state"] == "succeeded"
    assert [json.loads(line)["frame"] for line in masks.text.splitlines()] == [0, 1, 2, 3]
