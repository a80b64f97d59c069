"""Constants and helpers shared by the studio tests and the studio benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

STUDIO_DIR = Path(__file__).resolve().parent
REPO_ROOT = STUDIO_DIR.parents[1]
SAMPLE = REPO_ROOT / "samples" / "blackswan.mp4"
SAMPLE_MASK = REPO_ROOT / "samples" / "blackswan-mask.png"
SWAN_POINT = (271.0, 319.0)  # the swan's pixel farthest from its border on frame 0 (distance transform of the mask)


def open_session(client: httpx.Client, video: Path = SAMPLE, **fields: str) -> dict[str, Any]:
    response = client.post("/v1/sessions", files={"video": (video.name, video.read_bytes(), "video/mp4")},
                           data={"engine": "classical", **fields})
    assert response.status_code == 201, response.text
    return response.json()
