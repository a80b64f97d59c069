"""The Docker deployment keeps jobs across Redis restarts, requires an API key and does not expose Flower."""

from __future__ import annotations

from pathlib import Path

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yml").read_text())


def test_redis_persists_with_an_append_only_file():
    redis = compose()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_an_api_key_is_required_and_never_empty():
    key = compose()["x-service-env"]["VOS_API_KEY"]
    assert key.startswith("${VOS_API_KEY:?")  # compose stops when it is unset or empty


def test_flower_needs_a_password_and_listens_on_localhost_only():
    flower = compose()["services"]["flower"]
    assert any(arg.startswith("--basic-auth=${FLOWER_BASIC_AUTH:?") for arg in flower["command"])
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])


def test_the_api_image_runs_vos_serve_with_its_limits():
    cmd = [line for line in (DOCKER / "Dockerfile").read_text().splitlines() if line.startswith("CMD")]
    assert cmd == ['CMD ["vos", "serve", "--no-worker", "--host", "0.0.0.0", "--port", "8000"]']
