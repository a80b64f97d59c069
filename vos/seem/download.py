"""Registry and resumable download of the official SEEM v1 checkpoints (spec §10).

The official weights are the Hugging Face files ``xdecoder/SEEM``: ``seem_focalt_v1.pt`` and ``seem_focall_v1.pt``.
Their exact byte sizes and SHA-256 digests could not be observed when this was written (no network), so the
registry holds ``None`` for them. The download then checks the size announced by the server (HTTP Content-Length /
Content-Range) and, for the digest, uses the ``X-Linked-Etag`` header that Hugging Face sends with the redirect of an
LFS file when it is a 64-hex SHA-256 (otherwise no digest check). Fill the fields in once known and both checks
use the registry values.

Only the standard library is used (``urllib``): no extra dependency for a one-off download.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vos.errors import CheckpointError, DownloadError

HF_BASE_URL = "https://huggingface.co/xdecoder/SEEM/resolve/main/"
ENV_HOME = "SEEM_VOS_HOME"
DEFAULT_TIMEOUT_S = 30.0  # per socket operation (connect / each read), not for the whole transfer
_CHUNK = 1 << 20
_USER_AGENT = "seem-vos-weights/1.0"


@dataclass(frozen=True)
class CheckpointInfo:
    """One downloadable checkpoint. ``size``/``sha256`` are ``None`` when unknown (see module docstring)."""

    name: str
    variant: str  # backbone variant the model builder expects: "focalt" or "focall"
    filename: str
    url: str
    size: int | None
    sha256: str | None
    description: str


CHECKPOINTS: dict[str, CheckpointInfo] = {
    "seem-focalt": CheckpointInfo(
        name="seem-focalt",
        variant="focalt",
        filename="seem_focalt_v1.pt",
        url=HF_BASE_URL + "seem_focalt_v1.pt",
        size=None,  # expected ≈ 0.66 GB if stored in fp32 (spec §10), unverified
        sha256=None,
        description="SEEM v1, Focal-T backbone (164.6 M parameters)",
    ),
    "seem-focall": CheckpointInfo(
        name="seem-focall",
        variant="focall",
        filename="seem_focall_v1.pt",
        url=HF_BASE_URL + "seem_focall_v1.pt",
        size=None,  # expected ≈ 1.37 GB if stored in fp32 (spec §10), unverified
        sha256=None,
        description="SEEM v1, Focal-L backbone (341.2 M parameters)",
    ),
}


def default_cache_dir() -> Path:
    """Where downloaded weights live: ``$SEEM_VOS_HOME/weights``, else ``$XDG_CACHE_HOME/seem-vos/weights``, else
    ``~/.cache/seem-vos/weights``."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser() / "weights"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "seem-vos" / "weights"


def get_checkpoint_info(name: str) -> CheckpointInfo:
    """Registry entry by name (``seem-focalt``) or by file name (``seem_focalt_v1.pt``)."""
    key = name.strip().lower()
    for info in CHECKPOINTS.values():
        if key in (info.name, info.filename):
            return info
    raise DownloadError(f"unknown checkpoint name {name!r}; known names: {', '.join(CHECKPOINTS)}")


def cached_path(name: str, cache_dir: str | Path | None = None) -> Path:
    """The path a named checkpoint has (or would have) in the cache."""
    return Path(cache_dir or default_cache_dir()) / get_checkpoint_info(name).filename


def resolve_weights(
    path_or_name: str | Path, cache_dir: str | Path | None = None, *, download: bool = False, progress: bool = True
) -> Path:
    """A local checkpoint file for ``path_or_name``: an existing path, or a registry name in the cache.

    A registry name that is not cached is downloaded when ``download`` is True; otherwise this raises
    :class:`CheckpointError` telling the user to run ``vos weights download NAME``.
    """
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    try:
        info = get_checkpoint_info(str(path_or_name))
    except DownloadError:
        raise CheckpointError(
            f"checkpoint file not found: {path_or_name} (not a file, and not one of the names {', '.join(CHECKPOINTS)})"
        ) from None
    local = cached_path(info.name, cache_dir)
    if local.is_file():
        return local
    if download:
        return download_checkpoint(info.name, local.parent, progress=progress)
    raise CheckpointError(
        f"weights {info.name!r} are not downloaded (looked for {local}); run `vos weights download {info.name}` "
        f"or download {info.url} manually and pass its path"
    )


def download_checkpoint(
    name: str,
    dest_dir: str | Path | None = None,
    *,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    url: str | None = None,
) -> Path:
    """Download a registry checkpoint into ``dest_dir`` (default: :func:`default_cache_dir`) and return its path.

    Resumes a previous partial download, verifies size (and SHA-256 when known) and renames atomically; an existing
    complete file is returned without network access. ``url`` overrides the registry URL (mirrors, tests).
    """
    info = get_checkpoint_info(name)
    dest = Path(dest_dir or default_cache_dir()) / info.filename
    return download_url(url or info.url, dest, size=info.size, sha256=info.sha256, progress=progress, timeout=timeout)


def download_url(
    url: str,
    dest: str | Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Resumable download of ``url`` to ``dest`` through ``dest + '.part'`` (HTTP Range), then verify and rename."""
    dest = Path(dest)
    if dest.is_file() and _existing_file_ok(dest, size, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total, announced_sha256 = _fetch_into(url, part, size, progress, timeout)
    _verify(part, total, sha256 or announced_sha256)
    os.replace(part, dest)  # atomic on one filesystem: readers never see a half-written checkpoint
    return dest


def _existing_file_ok(dest: Path, size: int | None, sha256: str | None) -> bool:
    # With nothing known about the file we trust it (it was renamed into place only after a verified download).
    if size is not None and dest.stat().st_size != size:
        return False
    return sha256 is None or _sha256(dest) == sha256.lower()


def _fetch_into(url: str, part: Path, size: int | None, progress: bool, timeout: float) -> tuple[int, str | None]:
    """Append the missing bytes of ``url`` to ``part``; returns ``(expected total size, server SHA-256 or None)``.
    Retries once from scratch if the server rejects the resume offset."""
    for attempt in range(2):
        offset = part.stat().st_size if part.exists() else 0
        if size is not None and offset == size:
            return size, None  # a previous run got every byte but stopped before verifying
        if size is not None and offset > size:
            part.unlink()
            offset = 0
        try:
            return _request_and_write(url, part, offset, size, progress, timeout)
        except _RangeNotSatisfiable as exc:
            if exc.total is not None and exc.total == offset:
                return offset, None  # the partial file is already complete
            part.unlink(missing_ok=True)  # stale or foreign partial file: start over
            if attempt == 1:
                raise DownloadError(f"server rejected the download range for {url}") from None
    raise AssertionError("unreachable")


class _RangeNotSatisfiable(Exception):
    def __init__(self, total: int | None) -> None:
        super().__init__(total)
        self.total = total


class _RedirectRecorder(urllib.request.HTTPRedirectHandler):
    """Follows redirects like the default handler and remembers a SHA-256 announced on the way."""

    def __init__(self) -> None:
        super().__init__()
        self.linked_sha256: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        etag = (headers.get("X-Linked-Etag") or "").strip().strip('"').removeprefix("W/").strip('"').lower()
        if _SHA256_RE.fullmatch(etag):
            self.linked_sha256 = etag
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _request_and_write(
    url: str, part: Path, offset: int, size: int | None, progress: bool, timeout: float
) -> tuple[int, str | None]:
    """One HTTP request; returns ``(expected total size, SHA-256 announced by a redirect or None)``."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    recorder = _RedirectRecorder()
    opener = urllib.request.build_opener(recorder)
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
            if offset and status != 206:
                offset = 0  # the server ignored Range and sends the whole file: rewrite the partial file
            total = _total_size(response, offset, size, url)
            mode = "ab" if offset else "wb"
            with open(part, mode) as fh:
                _copy(response, fh, offset, total, progress, part.name)
            return total, recorder.linked_sha256
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            raise _RangeNotSatisfiable(_content_range_total(exc.headers.get("Content-Range"))) from None
        raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        raise _network_error(url, exc, part) from None


def _network_error(url: str, exc: BaseException, part: Path) -> DownloadError:
    reason = getattr(exc, "reason", None) or exc or type(exc).__name__
    host = urllib.parse.urlparse(url).hostname or url
    kept = f"; the partial file {part} is kept and the next attempt resumes it" if part.exists() else ""
    return DownloadError(
        f"cannot download {url}: connection to {host} failed ({reason}). No network access? "
        f"Download the file on a connected machine and pass its path, or copy it to "
        f"{part.with_name(part.name.removesuffix('.part'))}{kept}"
    )


def _content_range_total(value: str | None) -> int | None:
    """Total from ``Content-Range: bytes a-b/TOTAL`` or ``bytes */TOTAL``."""
    match = re.search(r"/(\d+)\s*$", value or "")
    return int(match.group(1)) if match else None


def _total_size(response: object, offset: int, size: int | None, url: str) -> int:
    headers = response.headers  # type: ignore[attr-defined]
    if offset:
        announced = _content_range_total(headers.get("Content-Range"))
    else:
        length = headers.get("Content-Length")
        announced = int(length) if length is not None else None
    if size is not None and announced is not None and announced != size:
        raise DownloadError(f"{url}: server announces {announced} bytes, the registry expects {size}")
    total = size if size is not None else announced
    if total is None:
        raise DownloadError(f"{url}: the server did not announce the file size and none is registered")
    return total


def _copy(src: BinaryIO, dst: BinaryIO, done: int, total: int, progress: bool, label: str) -> None:
    report = _progress_printer(label, total) if progress else None
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            break
        dst.write(chunk)
        done += len(chunk)
        if report:
            report(done)
    if report:
        sys.stderr.write("\n")


def _progress_printer(label: str, total: int) -> Callable[[int], None]:
    last = [-1]

    def report(done: int) -> None:
        percent = int(100 * done / total) if total else 100
        if percent != last[0]:
            last[0] = percent
            sys.stderr.write(f"\r{label}: {done / 1e6:.1f}/{total / 1e6:.1f} MB ({percent}%)")
            sys.stderr.flush()

    return report


def _verify(part: Path, total: int, sha256: str | None) -> None:
    actual = part.stat().st_size
    if actual != total:
        # Keep the file: a short read (dropped connection) is resumable; a too-long one is not.
        if actual > total:
            part.unlink()
        raise DownloadError(f"download incomplete: {part} has {actual} of {total} bytes; run the command again")
    if sha256 is not None:
        digest = _sha256(part)
        if digest != sha256.lower():
            part.unlink()  # corrupt: resuming it would never succeed
            raise DownloadError(f"SHA-256 mismatch for {part.name}: got {digest}, expected {sha256}; file deleted")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
