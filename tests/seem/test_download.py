"""SEEM checkpoints through huggingface_hub, against a local server that speaks the hub's download protocol.

There is no network here, so two threaded HTTP servers on 127.0.0.1 stand in for the hub, as huggingface_hub 2.x
talks to it (``file_download.get_hf_file_metadata`` / ``http_get``):

* the *hub* answers ``HEAD|GET /{repo}/resolve/{revision}/{file}`` of an LFS file with a 302 to the *CDN*, carrying
  ``X-Repo-Commit``, ``X-Linked-Etag`` (the SHA-256), ``X-Linked-Size``, an ``ETag`` (the git id of the LFS pointer)
  and ``Location``; unknown files get a 404 with ``X-Error-Code: EntryNotFound``;
* the *CDN* is another origin (another port), so the client stops following redirects there, like with the real CDN,
  and serves the bytes with ``Content-Length``, ``ETag`` and HTTP ranges.

huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` when it is imported (its documented
behaviour), so the tests set ``huggingface_hub.constants``, which is where the library and `vos.seem.download` read
them at call time.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from vos.cli import main
from vos.errors import CheckpointError, DownloadError, WeightsNotAllowedError
from vos.seem import download
from vos.seem.config import SeemConfig
from vos.seem.download import (
    CHECKPOINTS,
    CheckpointInfo,
    cached_path,
    download_checkpoint,
    resolve_weights,
    verify_checkpoint,
    weights_dir,
)
from vos.seem.model import SeemModel, load_seem

COMMIT = "3f5a0c2b9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f40"
PAYLOAD = bytes(range(256)) * 40 + b"tail"  # 10244 bytes
TEST = CheckpointInfo(name="seem-test", variant="focalt", filename="seem_test_v1.pt", description="test file",
                      repo_id="tests/seem-test")
ABSENT = CheckpointInfo(name="seem-absent", variant="focalt", filename="seem_absent_v1.pt", description="not served",
                        repo_id="tests/seem-test")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")


@dataclass
class FakeHub:
    """The two servers' shared state: served files, request log and failure switches."""

    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, str, str | None]] = field(default_factory=list)  # server, method, path, Range
    authorizations: list[tuple[str, str, str | None]] = field(default_factory=list)  # server, path, Authorization
    cut_next_transfer_after: int | None = None  # close the connection after this many body bytes, once
    corrupt: bool = False  # flip a byte of what the CDN sends
    truncate_to: int | None = None  # the CDN serves only this many bytes, as a complete response
    cdn_delay_s: float = 0.0  # the CDN waits this long before it answers
    url: str = ""
    cdn_url: str = ""
    servers: list[http.server.ThreadingHTTPServer] = field(default_factory=list)

    def add(self, info: CheckpointInfo, data: bytes) -> None:
        self.files[(info.repo_id, info.filename)] = data

    def requests_to(self, server: str) -> list[tuple[str, str, str | None]]:
        return [(method, path, rng) for srv, method, path, rng in self.requests if srv == server]

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        self.servers.clear()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: http.server.ThreadingHTTPServer

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        role: str = self.server.role  # type: ignore[attr-defined]
        hub.requests.append((role, self.command, self.path, self.headers.get("Range")))
        hub.authorizations.append((role, self.path, self.headers.get("Authorization")))
        if role == "hub":
            self._resolve(hub)
        else:
            self._blob(hub, body)

    def _resolve(self, hub: FakeHub) -> None:
        match = _RESOLVE.match(self.path)
        data = hub.files.get((match["repo"], match["filename"])) if match else None
        if match is None or match["revision"] not in ("main", COMMIT) or data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        sha = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
        self.send_response(302)
        self.send_header("Location", f"{hub.cdn_url}/blobs/{sha}")
        git_id = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()  # what git names the pointer
        self.send_header("ETag", f'"{git_id}"')
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _blob(self, hub: FakeHub, body: bool) -> None:
        blobs = {hashlib.sha256(data).hexdigest(): (name, data) for (_, name), data in hub.files.items()}
        if self.path.removeprefix("/blobs/") not in blobs:
            self.send_error(404)
            return
        filename, data = blobs[self.path.removeprefix("/blobs/")]
        time.sleep(hub.cdn_delay_s)
        if hub.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        data = data[:hub.truncate_to]
        start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-"))[1])
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Disposition", f"inline; filename*=UTF-8''{filename}; filename=\"{filename}\";")
        self.end_headers()
        if not body:
            return
        cut, hub.cut_next_transfer_after = hub.cut_next_transfer_after, None
        self.wfile.write(data[start:] if cut is None else data[start:start + cut])  # short: the client sees EOF


def _start(hub: FakeHub, role: str) -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.hub, server.role = hub, role  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    hub.servers.append(server)
    return f"http://127.0.0.1:{server.server_address[1]}"


def _point_hub_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """What ``HF_ENDPOINT=endpoint`` does when it is set before huggingface_hub is imported."""
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")


@pytest.fixture()
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF_HUB_CACHE, online mode, an empty weights folder and the test checkpoints in the registry."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("VOS_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setitem(CHECKPOINTS, TEST.name, TEST)
    monkeypatch.setitem(CHECKPOINTS, ABSENT.name, ABSENT)
    return cache


@pytest.fixture()
def hub(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.add(TEST, PAYLOAD)
    fake.url, fake.cdn_url = _start(fake, "hub"), _start(fake, "cdn")
    _point_hub_at(monkeypatch, fake.url)
    yield fake
    fake.stop()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there once the socket is closed


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1 at import


# ---- download into the cache, then from the cache -----------------------------------------------------------------
def test_download_into_the_hf_cache(hub: FakeHub, hf_cache: Path) -> None:
    path = download_checkpoint(TEST.name, progress=False)
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert path == hf_cache / "models--tests--seem-test" / "snapshots" / COMMIT / TEST.filename
    assert path.read_bytes() == PAYLOAD
    assert path.resolve() == hf_cache / "models--tests--seem-test" / "blobs" / sha  # the cache's own layout
    assert (hf_cache / "models--tests--seem-test" / "refs" / "main").read_text() == COMMIT
    assert hub.requests_to("cdn") == [("GET", f"/blobs/{sha}", None)]
    resolves = [method for method, path, _ in hub.requests_to("hub") if "/resolve/" in path]
    assert resolves and set(resolves) == {"HEAD"}  # the hub is asked for metadata only, the CDN sends the bytes


def test_second_call_is_served_from_the_cache_with_the_server_stopped(hub: FakeHub) -> None:
    first = download_checkpoint(TEST.name, progress=False)
    hub.stop()
    assert download_checkpoint(TEST.name, progress=False) == first
    assert resolve_weights(TEST.name) == first
    assert resolve_weights(TEST.filename, download=False) == first


def test_offline_mode_uses_the_cache_and_fails_clearly_without_it(hub: FakeHub, monkeypatch) -> None:
    cached = download_checkpoint(TEST.name, progress=False)
    hub.add(ABSENT, b"never fetched")
    before = len(hub.requests)
    _offline(monkeypatch)
    assert resolve_weights(TEST.name) == cached
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set") as error:
        resolve_weights(ABSENT.name)
    assert ABSENT.filename in str(error.value) and "HF_ENDPOINT" in str(error.value)
    assert len(hub.requests) == before  # offline means no request at all


def test_no_network_is_a_clear_error_naming_the_settings(hf_cache: Path, monkeypatch) -> None:
    _point_hub_at(monkeypatch, _closed_port_url())
    with pytest.raises(DownloadError, match="No network access") as error:
        download_checkpoint(TEST.name, progress=False)
    message = str(error.value)
    assert "cannot download seem_test_v1.pt" in message and "HF_ENDPOINT" in message and "HF_HUB_OFFLINE" in message
    assert cached_path(TEST) is None


def test_a_file_missing_on_the_hub_or_mirror_is_named(hub: FakeHub) -> None:
    with pytest.raises(DownloadError, match=r"has no seem_absent_v1.pt \(tests/seem-test at revision main\)"):
        download_checkpoint(ABSENT.name, progress=False)


def test_hf_token_goes_to_the_hub_and_not_to_the_cdn(hub: FakeHub, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    download_checkpoint(TEST.name, progress=False)
    sent = {(server, auth) for server, path, auth in hub.authorizations if server == "cdn" or "/resolve/" in path}
    assert sent == {("hub", "Bearer hf_test_token"), ("cdn", None)}


def test_workers_starting_together_download_once(hub: FakeHub) -> None:
    hub.cdn_delay_s = 0.5  # the first transfer is still running when the second worker asks
    start = threading.Barrier(2)
    paths: list[Path] = []

    def worker() -> None:
        start.wait()
        paths.append(download_checkpoint(TEST.name, progress=False))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(paths) == 2 and paths[0] == paths[1] and paths[0].read_bytes() == PAYLOAD
    assert len(hub.requests_to("cdn")) == 1  # huggingface_hub's lock: the second waited and took the cached file


# ---- damaged transfers ---------------------------------------------------------------------------------------------
def test_an_interrupted_transfer_is_resumed(hub: FakeHub) -> None:
    chunk = constants.DOWNLOAD_CHUNK_SIZE  # the library writes what it received in chunks of this size
    big = PAYLOAD * (chunk // len(PAYLOAD) + 200)
    hub.add(TEST, big)
    hub.cut_next_transfer_after = chunk + 5000  # the connection drops after one full chunk and a bit
    path = download_checkpoint(TEST.name, progress=False)
    assert path.read_bytes() == big
    sha = hashlib.sha256(big).hexdigest()
    assert hub.requests_to("cdn") == [("GET", f"/blobs/{sha}", None), ("GET", f"/blobs/{sha}", f"bytes={chunk}-")]


def test_corrupt_bytes_are_detected_and_kept_out_of_the_cache(hub: FakeHub, hf_cache: Path) -> None:
    hub.corrupt = True
    with pytest.raises(DownloadError, match="is corrupt: SHA-256 .* the hub records"):
        download_checkpoint(TEST.name, progress=False)
    assert cached_path(TEST) is None and not list((hf_cache / "models--tests--seem-test" / "blobs").iterdir())
    hub.corrupt = False
    assert download_checkpoint(TEST.name, progress=False).read_bytes() == PAYLOAD


def test_a_short_file_is_an_error(hub: FakeHub) -> None:
    hub.truncate_to = 100  # a well-formed response, but shorter than the size the hub records (X-Linked-Size)
    with pytest.raises(DownloadError, match="should be of size 10244 but has size 100"):
        download_checkpoint(TEST.name, progress=False)
    assert cached_path(TEST) is None


# ---- local files and the worker restriction -----------------------------------------------------------------------
def test_a_preloaded_file_in_the_weights_folder_is_used_without_the_hub(hf_cache: Path, monkeypatch) -> None:
    _point_hub_at(monkeypatch, _closed_port_url())
    preloaded = weights_dir() / TEST.filename
    preloaded.parent.mkdir(parents=True)
    preloaded.write_bytes(PAYLOAD)
    assert resolve_weights(TEST.name) == preloaded
    assert resolve_weights(TEST.name, allow_paths_outside=False) == preloaded


def test_weights_folder_settings(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VOS_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("SEEM_VOS_HOME", str(tmp_path / "home"))
    assert weights_dir() == tmp_path / "home" / "weights"
    monkeypatch.setenv("VOS_WEIGHTS_DIR", str(tmp_path / "w"))
    assert weights_dir() == tmp_path / "w"
    monkeypatch.delenv("VOS_WEIGHTS_DIR")
    monkeypatch.delenv("SEEM_VOS_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights_dir() == tmp_path / "xdg" / "seem-vos" / "weights"


def test_local_paths(hf_cache: Path, tmp_path: Path) -> None:
    file = tmp_path / "mine.pt"
    file.write_bytes(b"x")
    assert resolve_weights(file) == file and resolve_weights(str(file)) == file
    with pytest.raises(CheckpointError, match="not found"):
        resolve_weights(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="run `vos weights download seem-test`"):
        resolve_weights(TEST.name, download=False)


def test_workers_accept_only_names_and_files_in_the_weights_folder(hf_cache: Path, tmp_path: Path) -> None:
    folder = weights_dir()
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "tuned.pt").write_bytes(b"x")
    outside = tmp_path / "outside.pt"
    outside.write_bytes(b"x")
    assert resolve_weights("sub/tuned.pt", allow_paths_outside=False) == folder / "sub" / "tuned.pt"
    assert resolve_weights(folder / "sub" / "tuned.pt", allow_paths_outside=False) == folder / "sub" / "tuned.pt"
    for spec in (outside, "/etc/passwd", "../outside.pt", "sub/../../outside.pt"):
        with pytest.raises(WeightsNotAllowedError, match="not allowed: give a checkpoint name"):
            resolve_weights(spec, allow_paths_outside=False)
    with pytest.raises(CheckpointError, match="not found") as error:
        resolve_weights("absent.pt", allow_paths_outside=False)
    assert not isinstance(error.value, WeightsNotAllowedError)
    with pytest.raises(CheckpointError, match="not downloaded"):  # a name stays a name, and may not download here
        resolve_weights(TEST.name, allow_paths_outside=False, download=False)


def test_registry_points_at_the_official_files() -> None:
    official = {name: info for name, info in CHECKPOINTS.items() if info.repo_id == download.SEEM_REPO}
    assert set(official) == {"seem-focalt", "seem-focall"}
    assert [(i.filename, i.variant, i.revision) for i in official.values()] == [
        ("seem_focalt_v1.pt", "focalt", download.SEEM_REVISION),
        ("seem_focall_v1.pt", "focall", download.SEEM_REVISION),
    ]
    assert download.get_checkpoint_info("seem_focall_v1.pt").name == "seem-focall"
    with pytest.raises(CheckpointError, match="known names"):
        download.get_checkpoint_info("seem-huge")


# ---- the real model from the cache --------------------------------------------------------------------------------
def test_the_model_loads_from_the_cached_file(seem_fixtures: Path, hub: FakeHub, monkeypatch) -> None:
    tiny = CheckpointInfo(name="seem-tiny", variant="focalt", filename="tiny_weights.pt", description="tiny fixture",
                          repo_id="tests/seem-tiny")
    monkeypatch.setitem(CHECKPOINTS, tiny.name, tiny)
    hub.add(tiny, (seem_fixtures / "tiny_weights.pt").read_bytes())
    config = SeemConfig.from_official_yaml(seem_fixtures / "tiny_config.yaml")
    model = load_seem("seem-tiny", config, vocabulary=False)  # first use: downloaded
    hub.stop()
    _offline(monkeypatch)
    again = load_seem("seem-tiny", config, vocabulary=False)  # from the cache, no network
    direct = load_seem(seem_fixtures / "tiny_weights.pt", config, vocabulary=False)
    assert isinstance(model, SeemModel) and cached_path(tiny) is not None
    for loaded in (model, again):
        state, expected = loaded.state_dict(), direct.state_dict()
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[key], expected[key]) for key in expected)


# ---- vos weights download / list / verify -------------------------------------------------------------------------
def test_cli_download_prints_the_cached_path_with_a_progress_bar(hub: FakeHub, monkeypatch, capsys) -> None:
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub's switch to draw bars without a terminal
    assert main(["weights", "download", TEST.name]) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()) == cached_path(TEST)
    assert "seem_test_v1.pt" in err and "100%" in err and "10.2k" in err
    assert main(["weights", "download", TEST.name, "--force", "--quiet"]) == 0
    assert "100%" not in capsys.readouterr().err
    assert len(hub.requests_to("cdn")) == 2


def test_cli_download_without_network(hf_cache: Path, monkeypatch, capsys) -> None:
    _point_hub_at(monkeypatch, _closed_port_url())
    assert main(["weights", "download", TEST.name]) == 2
    err = capsys.readouterr().err
    assert "vos weights: error: cannot download" in err and "HF_ENDPOINT" in err and "HF_HUB_OFFLINE" in err


def test_cli_list_shows_sizes_and_places(hub: FakeHub, hf_cache: Path, capsys) -> None:
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "seem-focalt" in out and "xdecoder/SEEM/seem_focall_v1.pt at main" in out
    assert "tests/seem-test/seem_test_v1.pt at main, size unknown, not downloaded" in out
    assert f"Hugging Face cache: {hf_cache}" in out
    path = download_checkpoint(TEST.name, progress=False)
    preloaded = weights_dir() / ABSENT.filename
    preloaded.parent.mkdir(parents=True)
    preloaded.write_bytes(b"y" * 2_000_000)
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert f"0.00 GB, cached: {path}" in out and f"0.00 GB, pre-loaded: {preloaded}" in out


def test_cli_verify_detects_a_corrupted_cached_file_and_download_force_repairs_it(hub: FakeHub, capsys) -> None:
    path = download_checkpoint(TEST.name, progress=False)
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert main(["weights", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"seem-test: OK, {path} has SHA-256 {sha} (recorded by {hub.url} (tests/seem-test at {COMMIT}))" in out
    assert ("HEAD", f"/tests/seem-test/resolve/{COMMIT}/{TEST.filename}", None) in hub.requests_to("hub")
    blob = path.resolve()
    blob.write_bytes(b"X" + PAYLOAD[1:])  # bit rot in the cache
    assert main(["weights", "verify", TEST.name]) == 1
    assert f"MISMATCH, {path} has SHA-256 {hashlib.sha256(b'X' + PAYLOAD[1:]).hexdigest()}" in capsys.readouterr().out
    assert main(["weights", "download", TEST.name, "--force", "--quiet"]) == 0
    assert path.read_bytes() == PAYLOAD and verify_checkpoint(TEST.name).ok


def test_cli_verify_offline_uses_the_digest_the_cache_recorded(hub: FakeHub, monkeypatch, capsys) -> None:
    download_checkpoint(TEST.name, progress=False)
    hub.stop()
    _offline(monkeypatch)
    assert main(["weights", "verify", TEST.name]) == 0
    assert "OK" in capsys.readouterr().out
    result = verify_checkpoint(TEST.name)
    assert result.ok and "recorded at download" in result.source
    cached_path(TEST).resolve().write_bytes(PAYLOAD[:-1] + b"!")
    assert not verify_checkpoint(TEST.name).ok


def test_verify_a_preloaded_file_needs_the_hub(hub: FakeHub, monkeypatch) -> None:
    preloaded = weights_dir() / TEST.filename
    preloaded.parent.mkdir(parents=True)
    preloaded.write_bytes(PAYLOAD)
    result = verify_checkpoint(TEST.name)
    assert result.ok and result.path == preloaded and result.source == f"{hub.url} (tests/seem-test at main)"
    preloaded.write_bytes(PAYLOAD + b"extra")
    assert not verify_checkpoint(TEST.name).ok
    _offline(monkeypatch)  # no blob name to fall back on: the file was never in the cache
    with pytest.raises(DownloadError, match=f"cannot verify {preloaded}: HF_HUB_OFFLINE is set"):
        verify_checkpoint(TEST.name)


def test_cli_verify_needs_a_local_file_and_a_known_name(hf_cache: Path, capsys) -> None:
    assert main(["weights", "verify"]) == 0
    assert "nothing to verify" in capsys.readouterr().out
    assert main(["weights", "verify", TEST.name]) == 2
    assert "not downloaded, nothing to verify" in capsys.readouterr().err
    assert main(["weights", "verify", "seem-huge"]) == 2
    assert "unknown checkpoint name 'seem-huge'" in capsys.readouterr().err


def test_cli_rejects_an_unknown_download_name() -> None:
    with pytest.raises(SystemExit):
        main(["weights", "download", "seem-huge"])
