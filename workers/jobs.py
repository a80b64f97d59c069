"""Job state shared by the API and the workers: Redis keys, state transitions, frame publishing, storage layout.

This is the one place that knows how a job is laid out. Redis holds the job's hash (state, progress, timings),
its bounded frame stream and the worker lease; storage (any fsspec URL) holds the upload, one JSON file per
frame and the result files. Every state change and every published frame goes through a Lua script, so a
cancelled job is never resurrected and a frame is never published twice, whichever worker runs the job.
"""

from __future__ import annotations

import enum
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import fsspec
import redis

from workers.settings import ServiceSettings


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
RESULT_FILES = {"masks.zip": "application/zip", "masks.json": "application/json", "overlay.mp4": "video/mp4"}
INPUT_SPEC = "job.json"  # inside the input folder: prompts, file names, engine and options


def new_job_id() -> str:
    return secrets.token_urlsafe(16)


def queue_for(engine: str, options: Mapping[str, Any], settings: ServiceSettings) -> str:
    """The Celery queue of a job: GPU engines go to ``gpu`` unless asked to run on the CPU."""
    device = str(options.get("device") or "")
    if device.startswith("cuda") or (engine in settings.gpu_engines and device != "cpu"):
        return "gpu"
    return "cpu"


class Keys:
    """Redis key names; every key starts with the configured prefix so deployments and tests can share a server."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def stream(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:frames"

    def lease(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:lease"

    def state_set(self, state: JobState | str) -> str:
        return f"{self.prefix}state:{JobState(state).value}"

    @property
    def finished(self) -> str:
        return f"{self.prefix}finished"  # sorted set: job id by finish time, for retention

    @property
    def frames_counter(self) -> str:
        return f"{self.prefix}stats:frames"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"  # sorted set: worker name by last heartbeat

    @property
    def broker_prefix(self) -> str:
        return f"{self.prefix}celery:"

    def queue(self, name: str) -> str:
        return f"{self.broker_prefix}{name}"


# KEYS: job hash, stream, finished zset. ARGV: new state, job id, state-set prefix, now, n allowed, allowed..., fields...
# Moves the job to a new state only from an allowed one, keeps the per-state sets in step and, for a final state,
# appends the end event to the stream, so readers learn the outcome after the last frame.
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'state')
if not current then return 0 end
local n = tonumber(ARGV[5])
local allowed = false
for i = 6, 5 + n do if ARGV[i] == current then allowed = true end end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
for i = 6 + n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SREM', ARGV[3] .. current, ARGV[2])
redis.call('SADD', ARGV[3] .. ARGV[1], ARGV[2])
if ARGV[1] == 'succeeded' or ARGV[1] == 'failed' or ARGV[1] == 'cancelled' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
  redis.call('XADD', KEYS[2], '*', 'end', ARGV[1], 'error', redis.call('HGET', KEYS[1], 'error') or '')
end
return 1
"""

# KEYS: job hash, stream, lease, frames counter. ARGV: lease token, frame index, record JSON, stream maxlen, lease ms.
# Publishes a frame only while this worker holds the lease of a running job, and only beyond the last published
# frame: a re-run after a crash recomputes from frame 0 without streaming any frame twice.
_PUBLISH = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return -2 end
redis.call('PEXPIRE', KEYS[3], ARGV[5])
local index = tonumber(ARGV[2])
if index <= tonumber(redis.call('HGET', KEYS[1], 'last_frame') or '-1') then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'frame', ARGV[2], 'data', ARGV[3])
redis.call('HSET', KEYS[1], 'last_frame', index, 'frames_done', index + 1)
redis.call('INCR', KEYS[4])
return 1
"""

# KEYS: job hash, lease. ARGV: token, lease ms, compute seconds. Renews the lease and reports whether to go on.
_HEARTBEAT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return -2 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'compute_s', ARGV[3])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(Exception):
    """Another worker took the job over (this one was presumed dead), or the job stopped running."""


@dataclass(frozen=True)
class StreamEntry:
    """One entry of a job's frame stream: a frame record, or the end of the job."""

    entry_id: str
    frame: int | None
    data: str | None
    end_state: str | None
    error: str | None

    @classmethod
    def parse(cls, entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> StreamEntry:
        get = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
               for k, v in fields.items()}
        frame = int(get["frame"]) if "frame" in get else None
        entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return cls(entry, frame, get.get("data"), get.get("end"), get.get("error") or None)


class JobStore:
    """Synchronous access to job state in Redis (used by workers, and by the API from its thread pool)."""

    def __init__(self, settings: ServiceSettings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis = client or redis.Redis.from_url(settings.redis_url)
        self._transition = self.redis.register_script(_TRANSITION)
        self._publish = self.redis.register_script(_PUBLISH)
        self._heartbeat = self.redis.register_script(_HEARTBEAT)
        self._release = self.redis.register_script(_RELEASE)

    # ------------------------------------------------------------------ records

    def create(self, job_id: str, fields: Mapping[str, Any]) -> None:
        record = {**{k: _encode(v) for k, v in fields.items()}, "id": job_id, "state": JobState.QUEUED.value,
                  "created_at": repr(time.time()), "last_frame": -1, "frames_done": 0, "attempts": 0}
        with self.redis.pipeline() as pipe:
            pipe.hset(self.keys.job(job_id), mapping=record)
            pipe.sadd(self.keys.state_set(JobState.QUEUED), job_id)
            pipe.execute()

    def get(self, job_id: str) -> dict[str, str] | None:
        raw = self.redis.hgetall(self.keys.job(job_id))
        return {k.decode(): v.decode() for k, v in raw.items()} if raw else None

    def transition(self, job_id: str, state: JobState, allowed_from: tuple[JobState, ...], **fields: Any) -> bool:
        """Set ``state`` (and ``fields``) if the job is in one of ``allowed_from``; False otherwise."""
        args: list[Any] = [state.value, job_id, f"{self.keys.prefix}state:", repr(time.time()), len(allowed_from)]
        args += [s.value for s in allowed_from]
        for name, value in fields.items():
            args += [name, _encode(value)]
        keys = [self.keys.job(job_id), self.keys.stream(job_id), self.keys.finished]
        return bool(self._transition(keys=keys, args=args))

    def delete_records(self, job_id: str) -> None:
        state = (self.get(job_id) or {}).get("state")
        with self.redis.pipeline() as pipe:
            pipe.delete(self.keys.job(job_id), self.keys.stream(job_id), self.keys.lease(job_id))
            if state:
                pipe.srem(self.keys.state_set(state), job_id)
            pipe.zrem(self.keys.finished, job_id)
            pipe.execute()

    def finished_before(self, cutoff: float) -> list[str]:
        return [m.decode() for m in self.redis.zrangebyscore(self.keys.finished, "-inf", cutoff)]

    # ------------------------------------------------------------------ worker side

    def acquire_lease(self, job_id: str) -> str | None:
        """A token if this worker may run the job now; None while another live worker holds it."""
        token = secrets.token_hex(8)
        ok = self.redis.set(self.keys.lease(job_id), token, nx=True, px=self._lease_ms)
        return token if ok else None

    def release_lease(self, job_id: str, token: str) -> None:
        self._release(keys=[self.keys.lease(job_id)], args=[token])

    def heartbeat(self, job_id: str, token: str, compute_s: float) -> None:
        """Renew the lease; raise :class:`LeaseLost` if the job was cancelled or taken over."""
        code = self._heartbeat(keys=[self.keys.job(job_id), self.keys.lease(job_id)],
                               args=[token, self._lease_ms, repr(compute_s)])
        if code < 0:
            raise LeaseLost(_LEASE_ERRORS[code])

    def publish_frame(self, job_id: str, token: str, index: int, record: str) -> bool:
        """Append a frame to the stream if it is new; False if it was published before (a re-run)."""
        keys = [self.keys.job(job_id), self.keys.stream(job_id), self.keys.lease(job_id), self.keys.frames_counter]
        code = self._publish(keys=keys, args=[token, index, record, self.settings.stream_maxlen, self._lease_ms])
        if code < 0:
            raise LeaseLost(_LEASE_ERRORS[code])
        return code == 1

    def worker_alive(self, name: str) -> None:
        self.redis.zadd(self.keys.workers, {name: time.time()})

    def worker_gone(self, name: str) -> None:
        self.redis.zrem(self.keys.workers, name)

    def live_workers(self, within_s: float = 15.0) -> int:
        return int(self.redis.zcount(self.keys.workers, time.time() - within_s, "+inf"))

    @property
    def _lease_ms(self) -> int:
        return int(self.settings.lease_s * 1000)


_LEASE_ERRORS = {-1: "the job's lease passed to another worker", -2: "the job is no longer running"}


def _encode(value: Any) -> str | int | float:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    return value if isinstance(value, (str, int)) else str(value)


# ---------------------------------------------------------------------------------------------- storage


class Storage:
    """The job files under an fsspec URL::

        {root}/{job_id}/input/video.<ext>, job.json, files/<n>   the upload
        {root}/{job_id}/frames/<index:06d>.json                  one frame record per frame
        {root}/{job_id}/results/masks.zip, masks.json, overlay.mp4
    """

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
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]

    def modified(self, job_id: str) -> float:
        info = self.fs.info(self.path(job_id))
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or 0.0
        return mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


# ---------------------------------------------------------------------------------------------- retention


def cleanup_expired(store: JobStore, storage: Storage, now: float | None = None) -> list[str]:
    """Delete jobs that finished more than the retention period ago, and uploads no job refers to.

    Returns the deleted job ids. An orphan folder (the API died mid-upload) is removed once it is as old as
    the retention period, so an upload in progress is never touched.
    """
    now = time.time() if now is None else now
    cutoff = now - store.settings.retention_s
    expired = store.finished_before(cutoff)
    for job_id in expired:
        storage.remove_job(job_id)
        store.delete_records(job_id)
    for job_id in storage.job_ids():
        if store.get(job_id) is None and storage.modified(job_id) < cutoff:
            storage.remove_job(job_id)
            expired.append(job_id)
    return expired
