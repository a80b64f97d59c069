"""A small client of the seem-vos API, and ``vos submit``: upload, follow the stream, download the results."""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from api.cli import child_process, free_port, stop_process
from vos.cli import add_engine_arguments, add_prompt_arguments, engine_options, prompts_from_args
from vos.engine import DEFAULT_ENGINE
from vos.errors import VosError
from vos.masks import encode_rle
from vos.prompts import ObjectPrompt

RESULTS = ("masks.zip", "masks.jsonl", "overlay.mp4")


class ServiceError(VosError):
    """The API refused a request or a job failed; the message is the server's."""


class VosClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def submit(self, video: Path, prompts: list[dict[str, Any]], engine: str = DEFAULT_ENGINE,
               options: dict[str, Any] | None = None, overlay: bool = True) -> dict[str, Any]:
        if not video.is_file():
            raise ServiceError(f"{video} is not a file")
        with video.open("rb") as handle:  # httpx streams the file part; the video is never read whole
            response = self.http.post("/v1/jobs", files={"video": (video.name, handle)}, data={
                "prompts": json.dumps(prompts), "engine": engine, "options": json.dumps(options or {}),
                "overlay": str(overlay).lower()})
        return _checked(response)

    def status(self, job_id: str) -> dict[str, Any]:
        return _checked(self.http.get(f"/v1/jobs/{job_id}"))

    def frames(self, job_id: str, after: int = -1) -> Iterator[dict[str, Any]]:
        """Frame records as NDJSON, resuming after ``after``; the last item is ``{"end": {...}}``."""
        with self.http.stream("GET", f"/v1/jobs/{job_id}/frames", params={"after": after},
                              headers={"Accept": "application/x-ndjson"}, timeout=None) as response:
            if response.status_code != 200:
                _checked(httpx.Response(response.status_code, content=response.read()))
            for line in response.iter_lines():
                if line:
                    yield json.loads(line)

    def download(self, job_id: str, name: str, target: Path) -> Path:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/results/{name}") as response:
            if response.status_code != 200:
                _checked(httpx.Response(response.status_code, content=response.read()))
            with target.open("wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
        return target

    def cancel(self, job_id: str) -> dict[str, Any]:
        return _checked(self.http.delete(f"/v1/jobs/{job_id}"))

    def close(self) -> None:
        self.http.close()


def _checked(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise ServiceError(f"the server answered {response.status_code}: {detail}")
    return response.json()


def prompt_json(prompt: ObjectPrompt) -> dict[str, Any]:
    """The API's JSON form of a prompt built by the ``vos track`` options (masks travel as RLE)."""
    item = prompt.model_dump(exclude_none=True, exclude={"mask", "scribbles", "reference"})
    if prompt.mask is not None:
        item["mask"] = {"rle": encode_rle(prompt.mask)}
    if prompt.scribbles:
        item["scribbles"] = [s.model_dump(exclude={"mask"}) for s in prompt.scribbles]
    if prompt.reference is not None:
        item["reference"] = {"image": {"png_base64": _png_base64(prompt.reference.image[..., ::-1])},
                             "mask": {"rle": encode_rle(prompt.reference.mask)}}
    return item


def _png_base64(bgr: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(bgr))
    if not ok:
        raise ServiceError("cannot encode the reference image as PNG")
    return base64.b64encode(data.tobytes()).decode("ascii")


@contextmanager
def local_service(timeout: float = 120.0) -> Iterator[str]:
    """Run ``vos serve`` (API, one worker, embedded Redis, temporary storage) for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="vos-local-") as folder:
        port = free_port()
        command = [sys.executable, "-m", "vos.cli", "serve", "--port", str(port), "--storage", f"{folder}/storage",
                   "--redis-dir", f"{folder}/redis"]
        env = {k: v for k, v in os.environ.items() if k not in ("VOS_REDIS_URL", "REDIS_URL")}  # embedded Redis
        process = child_process(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(url, process, timeout)
            yield url
        finally:
            stop_process(process)


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float) -> None:
    """Wait until the service that ``process`` started answers ``/readyz``; its exit or the timeout is an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"the local service exited with code {process.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise ServiceError(f"the local service was not ready after {timeout:g} s")


# ---------------------------------------------------------------------------------------------- vos submit


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("submit", help="send a video to a seem-vos server and download the masks")
    parser.add_argument("video", type=Path, help="video file to upload")
    server = parser.add_mutually_exclusive_group()
    server.add_argument("--server", default=os.environ.get("VOS_SERVER", "http://127.0.0.1:8000"),
                        help="API base URL (default $VOS_SERVER or http://127.0.0.1:8000)")
    server.add_argument("--local", action="store_true",
                        help="start a private service on this machine (API, worker, embedded Redis) for this job")
    parser.add_argument("--api-key", default=os.environ.get("VOS_API_KEY"), help="API key (default $VOS_API_KEY)")
    add_prompt_arguments(parser)
    add_engine_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("vos-out"), help="folder for the results (default ./vos-out)")
    parser.add_argument("--no-overlay", action="store_true", help="skip the overlay MP4")
    parser.set_defaults(func=run_submit)


def run_submit(args: argparse.Namespace) -> int:
    prompts = [prompt_json(p) for p in prompts_from_args(args.prompt_items or [], args.scribble_width)]
    with ExitStack() as stack:
        server = stack.enter_context(local_service()) if args.local else args.server
        client = VosClient(server, args.api_key)
        stack.callback(client.close)
        try:
            return _submit_and_download(client, args, prompts)
        except httpx.HTTPError as error:
            raise ServiceError(f"cannot talk to {server}: {error}") from error


def _submit_and_download(client: VosClient, args: argparse.Namespace, prompts: list[dict[str, Any]]) -> int:
    job = client.submit(args.video, prompts, args.engine, engine_options(args), overlay=not args.no_overlay)
    print(f"job {job['id']} queued; status at {job['status_url']}", flush=True)
    end = _follow(client, job["id"])
    if end["state"] != "succeeded":
        print(f"job {job['id']} {end['state']}: {end.get('error') or ''}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name in RESULTS if not args.no_overlay else RESULTS[:2]:
        print(f"downloaded {client.download(job['id'], name, args.out / name)}")
    return 0


def _follow(client: VosClient, job_id: str) -> dict[str, Any]:
    total = client.status(job_id)["frames_total"]
    for item in client.frames(job_id):
        if "end" in item:
            print(file=sys.stderr)
            return item["end"]
        present = sum(1 for obj in item["objects"] if obj["area"] > 0)
        print(f"\rframe {item['frame'] + 1}/{total}: {present} object(s) visible", end="", file=sys.stderr, flush=True)
    raise ServiceError(f"the stream of job {job_id} ended without a final state")
