"""The job files under an fsspec URL, and the local scratch folders of uploads.

Layout::

    {root}/{job_id}/input/video.<ext>, job.json, files/<n>   the upload
    {root}/{job_id}/frames/<index:06d>.json                  one frame record per frame (the latest revision)
    {root}/{job_id}/results/masks.zip, masks.jsonl, overlay.mp4
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import fsspec

from workers.core.models import NEW_JOB_ID_PATTERN, JobSpec

INPUT_SPEC = "job.json"  # inside the input folder
UPLOAD_PREFIX = "vos-upload-"


class Storage:
    def __init__(self, url: str) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.fs.makedirs(self.root, exist_ok=True)

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    def path(self, job_id: str, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), job_id, *parts])

    def frame_path(self, job_id: str, index: int) -> str:
        return self.path(job_id, "frames", f"{index:06d}.json")

    def spec_path(self, job_id: str) -> str:
        return self.path(job_id, "input", INPUT_SPEC)

    def write_spec(self, job_id: str, spec: JobSpec) -> None:
        self.write_bytes(self.spec_path(job_id), spec.model_dump_json().encode())

    def read_spec(self, job_id: str) -> JobSpec:
        return JobSpec.model_validate_json(self.read_bytes(self.spec_path(job_id)))

    def write_bytes(self, path: str, data: bytes) -> None:
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def read_chunks(self, path: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with self.fs.open(path, "rb") as handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def put(self, local_path: str, path: str) -> None:
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.put_file(local_path, path)

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def remove_job(self, job_id: str) -> None:
        if self.fs.exists(self.path(job_id)):
            self.fs.rm(self.path(job_id), recursive=True)

    def job_ids(self) -> list[str]:
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))
        return [name for name in names if re.match(NEW_JOB_ID_PATTERN, name)]

    def modified(self, job_id: str) -> float:
        info = self.fs.info(self.path(job_id))
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or 0.0
        return mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def upload_scratch_dir() -> tempfile.TemporaryDirectory:
    """A scratch folder for one upload, named after this process so a later API can remove it if this one dies."""
    return tempfile.TemporaryDirectory(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-")


def remove_stale_upload_dirs(folder: str | Path | None = None) -> list[Path]:
    """Remove the upload scratch folders of API processes that no longer run (killed mid-upload)."""
    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*-*"):
        pid = path.name[len(UPLOAD_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: not ours to judge
    return True
