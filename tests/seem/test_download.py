"""Checkpoint download: resume (HTTP Range), verification, atomic rename, clear and fast no-network errors.

A tiny HTTP server on 127.0.0.1 stands in for Hugging Face; nothing here touches the real network.
"""

import argparse
import dataclasses
import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vos.errors import CheckpointError, DownloadError
from vos.seem import cli_weights, download
from vos.seem.download import (
    CHECKPOINTS,
    default_cache_dir,
    download_checkpoint,
    download_url,
    get_checkpoint_info,
    resolve_weights,
)

PAYLOAD = bytes(range(256)) * 40 + b"tail"  # 10244 bytes, several 1 MiB-chunk-free reads are fine
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /file with Range support; behaviour switches live on the server object."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/file")
            self.send_header("X-Linked-Etag", f'"{srv.linked_etag}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path != "/file":
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: srv.cut_after] if srv.cut_after is not None else body)


@pytest.fixture()
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests, srv.honour_range, srv.cut_after, srv.linked_etag = [], True, None, SHA
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file"  # nothing listens there any more: connection refused


# ---- download_url ------------------------------------------------------------------------------------------------
def test_full_download(server, tmp_path: Path) -> None:
    dest = download_url(server.url + "/file", tmp_path / "w.pt", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "w.pt.part").exists()
    assert server.requests == [("/file", None)]


def test_resume_sends_range_and_appends(server, tmp_path: Path) -> None:
    (tmp_path / "w.pt.part").write_bytes(PAYLOAD[:1000])
    dest = download_url(server.url + "/file", tmp_path / "w.pt", sha256=SHA, size=len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/file", "bytes=1000-")]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path: Path) -> None:
    server.honour_range = False
    (tmp_path / "w.pt.part").write_bytes(b"garbage-prefix")
    dest = download_url(server.url + "/file", tmp_path / "w.pt", progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_interrupted_transfer_keeps_part_and_next_run_resumes(server, tmp_path: Path) -> None:
    server.cut_after = 3000
    with pytest.raises(DownloadError, match="incomplete"):
        download_url(server.url + "/file", tmp_path / "w.pt", progress=False)
    assert (tmp_path / "w.pt.part").stat().st_size == 3000 and not (tmp_path / "w.pt").exists()
    server.cut_after = None
    dest = download_url(server.url + "/file", tmp_path / "w.pt", sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD and server.requests[-1] == ("/file", "bytes=3000-")


def test_complete_part_is_finalised_after_416(server, tmp_path: Path) -> None:
    (tmp_path / "w.pt.part").write_bytes(PAYLOAD)  # size unknown locally: the server answers 416 bytes */N
    dest = download_url(server.url + "/file", tmp_path / "w.pt", progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_sha256_mismatch_deletes_the_file(server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download_url(server.url + "/file", tmp_path / "w.pt", sha256="0" * 64, progress=False)
    assert not (tmp_path / "w.pt").exists() and not (tmp_path / "w.pt.part").exists()


def test_corrupt_resumed_part_fails_the_sha256_check(server, tmp_path: Path) -> None:
    (tmp_path / "w.pt.part").write_bytes(b"x" * 1000)  # wrong bytes that a resume would keep
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download_url(server.url + "/file", tmp_path / "w.pt", sha256=SHA, progress=False)
    assert not (tmp_path / "w.pt.part").exists()  # so the next attempt starts from scratch


def test_sha256_announced_by_redirect_is_checked(server, tmp_path: Path) -> None:
    dest = download_url(server.url + "/redirect", tmp_path / "ok.pt", progress=False)
    assert dest.read_bytes() == PAYLOAD
    server.linked_etag = "f" * 64
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        download_url(server.url + "/redirect", tmp_path / "bad.pt", progress=False)


def test_size_mismatch_with_registry(server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="registry expects"):
        download_url(server.url + "/file", tmp_path / "w.pt", size=len(PAYLOAD) + 1, progress=False)


def test_http_error_is_reported(server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_url(server.url + "/missing", tmp_path / "w.pt", progress=False)


def test_existing_file_needs_no_network(tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_bytes(PAYLOAD)
    assert download_url(_closed_port_url(), tmp_path / "w.pt", sha256=SHA, progress=False).read_bytes() == PAYLOAD


def test_progress_output(server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    download_url(server.url + "/file", tmp_path / "w.pt", progress=True)
    assert "(100%)" in capsys.readouterr().err


# ---- no network: fast and clear ----------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["closed", "http://seem-weights.invalid/seem_focalt_v1.pt"])
def test_unreachable_host_fails_fast_and_clearly(tmp_path: Path, url: str) -> None:
    url = _closed_port_url() if url == "closed" else url
    start = time.monotonic()
    with pytest.raises(DownloadError, match="No network access"):
        download_url(url, tmp_path / "w.pt", progress=False, timeout=2)
    assert time.monotonic() - start < 5


def test_silent_server_times_out(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/file"
        start = time.monotonic()
        with pytest.raises(DownloadError, match="No network access"):
            download_url(url, tmp_path / "w.pt", progress=False, timeout=0.5)
        assert time.monotonic() - start < 5


# ---- registry, cache, resolve ------------------------------------------------------------------------------------
def test_registry_points_at_official_files() -> None:
    assert set(CHECKPOINTS) == {"seem-focalt", "seem-focall"}
    assert CHECKPOINTS["seem-focalt"].url == "https://huggingface.co/xdecoder/SEEM/resolve/main/seem_focalt_v1.pt"
    assert CHECKPOINTS["seem-focall"].filename == "seem_focall_v1.pt"
    assert get_checkpoint_info("seem_focall_v1.pt").name == "seem-focall"
    with pytest.raises(DownloadError, match="known names"):
        get_checkpoint_info("seem-huge")


def test_default_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEEM_VOS_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "weights"
    monkeypatch.delenv("SEEM_VOS_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "seem-vos" / "weights"


def test_download_checkpoint_by_name(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = dataclasses.replace(CHECKPOINTS["seem-focalt"], url=server.url + "/file", size=len(PAYLOAD), sha256=SHA)
    monkeypatch.setitem(CHECKPOINTS, "seem-focalt", info)
    dest = download_checkpoint("seem-focalt", tmp_path, progress=False)
    assert dest == tmp_path / "seem_focalt_v1.pt" and dest.read_bytes() == PAYLOAD
    assert resolve_weights("seem-focalt", cache_dir=tmp_path) == dest
    other = resolve_weights("seem-focalt", cache_dir=tmp_path / "other", download=True, progress=False)
    assert other == tmp_path / "other" / "seem_focalt_v1.pt" and other.read_bytes() == PAYLOAD


def test_resolve_weights(tmp_path: Path) -> None:
    file = tmp_path / "mine.pt"
    file.write_bytes(b"x")
    assert resolve_weights(file) == file and resolve_weights(str(file)) == file
    with pytest.raises(CheckpointError, match="vos weights download seem-focall"):
        resolve_weights("seem-focall", cache_dir=tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        resolve_weights(tmp_path / "absent.pt")


# ---- CLI ---------------------------------------------------------------------------------------------------------
def _cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vos")
    cli_weights.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_list(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "seem_focall_v1.pt").write_bytes(b"x")
    args = _cli().parse_args(["weights", "list", "--dir", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "seem-focalt" in out and "not downloaded" in out and f"downloaded: {tmp_path}" in out


def test_cli_download(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    info = dataclasses.replace(CHECKPOINTS["seem-focall"], url=server.url + "/file")
    monkeypatch.setitem(CHECKPOINTS, "seem-focall", info)
    args = _cli().parse_args(["weights", "download", "seem-focall", "--dir", str(tmp_path), "--quiet"])
    assert args.func(args) == 0
    assert (tmp_path / "seem_focall_v1.pt").read_bytes() == PAYLOAD
    assert capsys.readouterr().out.strip() == str(tmp_path / "seem_focall_v1.pt")


def test_cli_download_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    offline = dataclasses.replace(CHECKPOINTS["seem-focalt"], url=_closed_port_url())
    monkeypatch.setitem(CHECKPOINTS, "seem-focalt", offline)
    args = _cli().parse_args(["weights", "download", "seem-focalt", "--dir", str(tmp_path)])
    assert args.func(args) == 1
    assert "No network access" in capsys.readouterr().err


def test_cli_rejects_unknown_name() -> None:
    with pytest.raises(SystemExit):
        _cli().parse_args(["weights", "download", "seem-huge"])


def test_module_has_no_extra_dependencies() -> None:
    assert "requests" not in download.__dict__ and "huggingface_hub" not in download.__dict__
