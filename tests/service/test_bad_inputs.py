"""Malformed requests get a 4xx with a clear message, never a 500, and leave nothing behind."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from helpers import POINT_PROMPT
from vos.masks import encode_rle
from workers.core.storage import Storage


def png_bytes(width: int, height: int) -> bytes:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 3: height // 2, width // 3: width // 2] = 255
    out = io.BytesIO()
    Image.fromarray(mask).save(out, format="PNG")
    return out.getvalue()


def rle_of(width: int, height: int) -> dict[str, Any]:
    mask = np.zeros((height, width), bool)
    mask[10:20, 10:20] = True
    return encode_rle(mask)


GOOD = json.dumps(POINT_PROMPT)
CASES = [
    # id, video key, filename, form fields, extra files, status, message fragment
    ("no-prompts", "dog", "dog.mp4", {}, {}, 422, "prompts"),
    ("prompts-not-json", "dog", "dog.mp4", {"prompts": "[{object_id: 1"}, {}, 422, "not valid JSON"),
    ("prompts-an-object", "dog", "dog.mp4", {"prompts": '{"object_id": 1}'}, {}, 422, "must be a JSON list"),
    ("prompt-not-an-object", "dog", "dog.mp4", {"prompts": "[3]"}, {}, 422, "must be a JSON object"),
    ("empty-prompt-list", "dog", "dog.mp4", {"prompts": "[]"}, {}, 422, "no prompts"),
    ("object-id-zero", "dog", "dog.mp4", {"prompts": '[{"object_id": 0, "points": [{"x": 1, "y": 1}]}]'}, {}, 422,
     "object_id"),
    ("no-prompt-kind", "dog", "dog.mp4", {"prompts": '[{"object_id": 1}]'}, {}, 422, "has no prompt"),
    ("point-outside", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "points": [{"x": 500, "y": 20}]}]'}, {}, 422,
     "outside the 320x180 frame"),
    ("box-reversed", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "box": {"x0": 50, "y0": 50, "x1": 10, "y1": 60}}]'},
     {}, 422, "x1 > x0"),
    ("duplicate-object", "dog", "dog.mp4", {"prompts": json.dumps(POINT_PROMPT * 2)}, {}, 422, "prompted twice"),
    ("frame-beyond-video", "dog", "dog.mp4",
     {"prompts": '[{"object_id": 1, "frame_index": 99, "points": [{"x": 5, "y": 5}]}]'}, {}, 422, "has 30 frames"),
    ("rle-wrong-size", "dog", "dog.mp4", {"prompts": json.dumps([{"object_id": 1, "mask": {"rle": rle_of(64, 64)}}])},
     {}, 422, "expected 320x180"),
    ("png-wrong-size", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "mask": {"file": "m.png"}}]'},
     {"m.png": png_bytes(100, 50)}, 422, "expected 320x180"),
    ("mask-file-missing", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "mask": {"file": "absent.png"}}]'}, {}, 422,
     "no uploaded part"),
    ("mask-file-not-png", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "mask": {"file": "m.png"}}]'},
     {"m.png": b"not an image"}, 422, "not a readable PNG"),
    ("bad-base64", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "mask": {"png_base64": "@@@"}}]'}, {}, 422,
     "not valid base64"),
    ("unknown-mask-encoding", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "mask": {"bitmap": 1}}]'}, {}, 422,
     "unknown mask encoding"),
    ("unknown-engine", "dog", "dog.mp4", {"prompts": GOOD, "engine": "magic"}, {}, 422, "unknown engine"),
    ("unknown-option", "dog", "dog.mp4", {"prompts": GOOD, "options": '{"turbo": true}'}, {}, 422, "has no option turbo"),
    ("options-not-object", "dog", "dog.mp4", {"prompts": GOOD, "options": "[1]"}, {}, 422, "options must be a JSON object"),
    ("text-on-weight-free", "dog", "dog.mp4", {"prompts": '[{"object_id": 1, "text": "a dog"}]', "engine": "static"},
     {}, 422, "cannot use text"),
    ("not-a-video", "text", "dog.mp4", {"prompts": GOOD}, {}, 422, "the uploaded video is not a readable video"),
    ("empty-file", "empty", "dog.mp4", {"prompts": GOOD}, {}, 422, "empty"),
    ("truncated", "truncated", "dog.mp4", {"prompts": GOOD}, {}, 422, "video"),
    ("container-not-allowed", "dog", "dog.gif", {"prompts": GOOD}, {}, 415, "container 'gif' is not accepted"),
    ("no-extension", "dog", "video", {"prompts": GOOD}, {}, 415, "no file extension"),
    ("too-many-frames", "long", "long.mp4", {"prompts": '[{"object_id": 1, "points": [{"x": 5, "y": 5}]}]'}, {}, 422,
     "the limit is 200"),
    ("too-large", "big", "big.mp4", {"prompts": GOOD}, {}, 413, "larger than the limit"),
]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.mp4"
    path.write_bytes(b"\0" * (9 << 20))  # over the tests' 8 MiB upload limit
    return path


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_upload_is_refused_cleanly(case, server, videos, big_file, store):
    _, video_key, filename, fields, extra, status, fragment = case
    video = big_file if video_key == "big" else videos[video_key]
    files = [("video", (filename, video.read_bytes(), "video/mp4"))]
    files += [(name, (name, data, "image/png")) for name, data in extra.items()]
    data = {"engine": "static", **fields}
    storage = Storage(server.settings.storage_url)
    before_dirs, before_keys = set(storage.job_ids()), set(store.redis.keys(f"{store.keys.prefix}job:*"))
    with server.client() as client:
        response = client.post("/v1/jobs", files=files, data=data)
    assert response.status_code == status, response.text
    assert fragment in response.json()["detail"], response.json()
    assert set(storage.job_ids()) == before_dirs  # nothing half-created
    assert set(store.redis.keys(f"{store.keys.prefix}job:*")) == before_keys


def test_missing_video_part(server):
    with server.client() as client:
        response = client.post("/v1/jobs", data={"prompts": GOOD}, files={"other": ("x.txt", b"x", "text/plain")})
    assert response.status_code == 422 and "video" in response.json()["detail"]


@pytest.mark.parametrize("method, path, status, fragment", [
    ("GET", "/v1/jobs/unknown", 404, "no job"),
    ("GET", "/v1/jobs/unknown/frames", 404, "no job"),
    ("DELETE", "/v1/jobs/unknown", 404, "no job"),
    ("GET", "/v1/jobs/unknown/results/masks.zip", 404, "no job"),
    ("GET", "/v1/jobs/unknown/results/secrets.txt", 422, "name"),
])
def test_unknown_jobs_and_results(server, method, path, status, fragment):
    with server.client() as client:
        response = client.request(method, path)
    assert response.status_code == status and fragment in response.json()["detail"]


def test_bad_last_event_id_and_unfinished_download(server, videos):
    with server.client() as client:
        response = client.post("/v1/jobs", files={"video": ("dog.mp4", videos["dog60"].read_bytes(), "video/mp4")},
                               data={"prompts": GOOD, "engine": "slow"})
        job = response.json()
        bad = client.get(job["stream_url"], headers={"Last-Event-ID": "frame-seven"})
        early = client.get(f"{job['status_url']}/results/masks.zip")
        client.delete(job["status_url"])
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["detail"]
    assert early.status_code == 409 and "results exist only once it succeeded" in early.json()["detail"]


def test_inline_base64_mask_is_accepted(server, videos):
    prompt = [{"object_id": 1, "mask": {"png_base64": base64.b64encode(png_bytes(320, 180)).decode()}}]
    with server.client() as client:
        response = client.post("/v1/jobs", files={"video": ("dog.mp4", videos["dog"].read_bytes(), "video/mp4")},
                               data={"prompts": json.dumps(prompt), "engine": "static"})
    assert response.status_code == 202, response.text
