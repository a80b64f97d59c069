"""The official SEEM v1 checkpoints: a registry of names, variants and hub revisions, and where each file comes from.

The files live on the Hugging Face hub (``xdecoder/SEEM``, spec §10) and are fetched with ``huggingface_hub``, so
they share the hub's cache with every other user of it (the official SEEM demo included) and honour ``HF_ENDPOINT``
(mirrors), ``HF_TOKEN``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``. huggingface_hub reads these variables when it is
imported; this module reads them back through ``huggingface_hub.constants`` so that both always agree.

A registry name resolves to, in this order (the first two without any network access):

1. ``<weights folder>/<file name>``, a file a deployment pre-loaded. The weights folder is ``$VOS_WEIGHTS_DIR``, else
   ``$SEEM_VOS_HOME/weights``, else ``$XDG_CACHE_HOME/seem-vos/weights`` (``~/.cache/seem-vos/weights``);
2. the file in the Hugging Face cache at the registry revision;
3. a download with ``hf_hub_download`` (progress bar, locking, atomic move into the cache), whose bytes are then
   checked against the SHA-256 the hub records for the file (its ``X-Linked-Etag``).

Service workers accept only registry names and files inside the weights folder:
``resolve_weights(spec, allow_paths_outside=False)``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import httpx2  # huggingface_hub 2.x speaks HTTP through httpx2, and its transport errors reach the caller
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import (
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import HfFileMetadata
from huggingface_hub.utils import silent_tqdm

from vos.errors import CheckpointError, DownloadError, WeightsNotAllowedError

SEEM_REPO = "xdecoder/SEEM"
# No commit id of xdecoder/SEEM could be looked up when this was written (no network, and none is quoted in public
# code), so the registry follows the branch. Put the 40-hex commit here once known: downloads then become
# reproducible, and a cached file is found with no network access even before `refs/main` exists in the cache.
SEEM_REVISION = "main"
ENV_WEIGHTS_DIR = "VOS_WEIGHTS_DIR"
ENV_HOME = "SEEM_VOS_HOME"
_CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint of the registry: a file of a hub repository at a pinned revision."""

    name: str
    variant: str  # backbone variant the model builder expects: "focalt" or "focall"
    filename: str
    description: str
    repo_id: str = SEEM_REPO
    revision: str = SEEM_REVISION
    size: int | None = None  # bytes, when known before downloading (the official sizes could not be observed)


CHECKPOINTS: dict[str, CheckpointInfo] = {
    "seem-focalt": CheckpointInfo(
        name="seem-focalt", variant="focalt", filename="seem_focalt_v1.pt",
        description="SEEM v1, Focal-T backbone (164.6 M parameters, about 0.66 GB)",
    ),
    "seem-focall": CheckpointInfo(
        name="seem-focall", variant="focall", filename="seem_focall_v1.pt",
        description="SEEM v1, Focal-L backbone (341.2 M parameters, about 1.4 GB)",
    ),
}


@dataclass(frozen=True)
class Verification:
    """The outcome of re-hashing a local checkpoint against the digest the hub records for it."""

    name: str
    path: Path
    sha256: str
    expected: str
    source: str  # where ``expected`` came from

    @property
    def ok(self) -> bool:
        return self.sha256 == self.expected


# ------------------------------------------------------------------------------------------------ registry, places
def weights_dir() -> Path:
    """The folder of pre-loaded checkpoint files: ``$VOS_WEIGHTS_DIR``, else ``$SEEM_VOS_HOME/weights``, else
    ``$XDG_CACHE_HOME/seem-vos/weights`` (``~/.cache/seem-vos/weights``)."""
    configured = os.environ.get(ENV_WEIGHTS_DIR)
    if configured:
        return Path(configured).expanduser()
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser() / "weights"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "seem-vos" / "weights"


def hub_cache_dir() -> Path:
    """The Hugging Face cache huggingface_hub uses (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``)."""
    return Path(constants.HF_HUB_CACHE)


def find_checkpoint(name: str) -> CheckpointInfo | None:
    """The registry entry named ``name`` (``seem-focalt``) or with that file name (``seem_focalt_v1.pt``)."""
    key = name.strip().lower()
    return next((info for info in CHECKPOINTS.values() if key in (info.name, info.filename)), None)


def get_checkpoint_info(name: str) -> CheckpointInfo:
    """Like :func:`find_checkpoint`, but an unknown name is a :class:`CheckpointError`."""
    info = find_checkpoint(name)
    if info is None:
        raise CheckpointError(f"unknown checkpoint name {name!r}; known names: {', '.join(CHECKPOINTS)}")
    return info


def preloaded_path(info: CheckpointInfo) -> Path:
    """Where a deployment puts the checkpoint so that it is used without the hub."""
    return weights_dir() / info.filename


def cached_path(info: CheckpointInfo) -> Path | None:
    """The checkpoint in the Hugging Face cache at the registry revision, or None (no network access)."""
    found = try_to_load_from_cache(info.repo_id, info.filename, revision=info.revision)
    return Path(found) if isinstance(found, str) else None


def local_checkpoint(info: CheckpointInfo) -> Path | None:
    """The pre-loaded file, else the cached one, else None."""
    preloaded = preloaded_path(info)
    return preloaded if preloaded.is_file() else cached_path(info)


# -------------------------------------------------------------------------------------------------- resolution
def resolve_weights(spec: str | Path, *, allow_paths_outside: bool = True, download: bool = True,
                    progress: bool = True) -> Path:
    """The checkpoint file for ``spec``: a registry name (see the module docstring) or a file path.

    With ``allow_paths_outside=False`` (service workers) a path must name a file inside :func:`weights_dir`
    (relative paths are taken from there); anything else raises :class:`WeightsNotAllowedError` before the file
    system is touched, so a client cannot probe the worker's files. ``download=False`` turns a registry checkpoint
    that is not local into a :class:`CheckpointError` instead of a download.
    """
    info = find_checkpoint(str(spec))
    if allow_paths_outside:
        path = Path(spec).expanduser()
        if info is None or path.is_file():  # an existing file wins over a registry file name
            return _existing_file(path, str(spec))
    elif info is None:
        return _existing_file(check_weights_location(spec), str(spec))
    return checkpoint_file(info, download=download, progress=progress)


def check_weights_location(spec: str | Path) -> Path:
    """``spec`` as a path inside the weights folder, or :class:`WeightsNotAllowedError`; purely lexical (symlinks a
    deployment put in the folder are fine, ``..`` and outside absolute paths are not)."""
    root = Path(os.path.abspath(weights_dir()))
    path = Path(os.path.normpath(root / spec))  # an absolute spec replaces the root
    if not path.is_relative_to(root):
        raise WeightsNotAllowedError(
            f"weights {str(spec)!r} are not allowed: give a checkpoint name ({', '.join(CHECKPOINTS)}) or a file in "
            f"the weights folder {root} ({ENV_WEIGHTS_DIR} / {ENV_HOME})")
    return path


def _existing_file(path: Path, spec: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {spec} (not a file, and not one of the names "
                              f"{', '.join(CHECKPOINTS)})")
    return path


def checkpoint_file(info: CheckpointInfo, *, download: bool = True, progress: bool = True) -> Path:
    """The local file of a registry checkpoint, downloaded from the hub when it is not local and ``download``."""
    local = local_checkpoint(info)
    if local is not None:
        return local
    if not download:
        raise CheckpointError(
            f"weights {info.name!r} are not downloaded (looked in {weights_dir()} and in the Hugging Face cache "
            f"{hub_cache_dir()}); run `vos weights download {info.name}` or put {info.filename} in {weights_dir()}")
    return download_checkpoint(info.name, progress=progress)


# ------------------------------------------------------------------------------------------------------- the hub
def download_checkpoint(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """Download a registry checkpoint into the Hugging Face cache (a cached copy is returned as it is, unless
    ``force``) and check its bytes against the SHA-256 the hub records. Returns the cached file."""
    info = get_checkpoint_info(name)
    cached = None if force else cached_path(info)
    if cached is not None:
        return cached
    try:
        metadata = hub_metadata(info)
    except DownloadError as exc:
        raise DownloadError(f"cannot download {info.filename}: {exc}. To work without the hub, put the file into "
                            f"{weights_dir()} ({ENV_WEIGHTS_DIR} / {ENV_HOME})") from exc
    try:
        path = Path(hf_hub_download(info.repo_id, info.filename, revision=info.revision, force_download=force,
                                    tqdm_class=None if progress else silent_tqdm))
    except (OSError, httpx2.HTTPError) as exc:  # the hub's errors are OSErrors; a dropped transfer is httpx2's
        raise DownloadError(f"download of {info.filename} from {constants.ENDPOINT} failed: {exc}") from exc
    expected = _sha256_of_etag(metadata.etag)
    if expected is not None:  # None: not an LFS file, the hub records no SHA-256 for it
        actual = sha256_file(path)
        if actual != expected:
            _evict(path)
            raise DownloadError(
                f"{info.filename} from {constants.ENDPOINT} is corrupt: SHA-256 {actual}, the hub records {expected}. "
                f"It was removed from the cache; run the command again")
    return path


def hub_metadata(info: CheckpointInfo, revision: str | None = None) -> HfFileMetadata:
    """The hub's record of the checkpoint (digest, size, commit) from one HEAD request.

    It is asked without retries on purpose: with no network, hf_hub_download retries with back-off for about 23 s
    before it gives up, while one request tells at once, and the record is needed anyway to check the bytes.
    """
    revision = revision or info.revision
    where = f"{info.filename} ({info.repo_id} at revision {revision})"
    if constants.is_offline_mode():
        raise DownloadError(f"HF_HUB_OFFLINE is set, so the hub ({constants.ENDPOINT}, HF_ENDPOINT) is not asked "
                            f"for {where}; unset it to go online")
    try:
        return get_hf_file_metadata(hf_hub_url(info.repo_id, info.filename, revision=revision))
    except (RepositoryNotFoundError, RevisionNotFoundError, RemoteEntryNotFoundError) as exc:
        raise DownloadError(f"the hub at {constants.ENDPOINT} has no {where}; if HF_ENDPOINT names a mirror, check "
                            f"that it mirrors {info.repo_id} ({_first_line(exc)})") from exc
    except HfHubHTTPError as exc:
        raise DownloadError(f"the hub at {constants.ENDPOINT} refused {where}: {_first_line(exc)} "
                            f"(a token goes in HF_TOKEN)") from exc
    except (OfflineModeIsEnabled, httpx2.TransportError) as exc:
        raise DownloadError(
            f"connection to {constants.ENDPOINT} failed for {where} ({exc or type(exc).__name__}). No network "
            f"access? Set HF_ENDPOINT to a reachable hub mirror, or HF_HUB_OFFLINE=1 to use local files only") from exc


def verify_checkpoint(name: str) -> Verification:
    """Re-hash the local checkpoint (pre-loaded or cached) against the SHA-256 the hub records for it.

    The digest is asked of the hub for the commit the cached file belongs to. When the hub cannot be reached, a
    cached file is checked against the digest the cache recorded when it was downloaded (the name of its blob).
    """
    info = get_checkpoint_info(name)
    path = local_checkpoint(info)
    if path is None:
        raise CheckpointError(f"weights {info.name!r} are not downloaded, nothing to verify "
                              f"(run `vos weights download {info.name}`)")
    commit = path.parent.name if _COMMIT.fullmatch(path.parent.name) else None  # cache layout: snapshots/<commit>/
    recorded_by_cache = _sha256_of_etag(path.resolve().name)  # cache layout: blobs/<the hub's ETag>
    try:
        metadata = hub_metadata(info, commit)
    except DownloadError as exc:
        if recorded_by_cache is None:
            raise DownloadError(f"cannot verify {path}: {exc}") from exc
        return Verification(info.name, path, sha256_file(path), recorded_by_cache,
                            "the digest the Hugging Face cache recorded at download (the hub is not reachable)")
    expected = _sha256_of_etag(metadata.etag)
    if expected is None:
        raise DownloadError(f"the hub records no SHA-256 for {info.filename} (ETag {metadata.etag!r})")
    return Verification(info.name, path, sha256_file(path), expected,
                        f"{constants.ENDPOINT} ({info.repo_id} at {commit or info.revision})")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_of_etag(etag: str | None) -> str | None:
    """An LFS file's ETag is the SHA-256 of its bytes; other ETags (git blob ids) are not."""
    value = (etag or "").lower()
    return value if _SHA256.fullmatch(value) else None


def _evict(path: Path) -> None:
    """Remove a bad download from the cache: the snapshot link and the blob it points to."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
