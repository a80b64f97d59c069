"""Interactive sessions in the service: each session lives in the memory of one worker process, pinned to it.

Design (the API side is :mod:`api.sessions`):

* **Pinning.** Every Celery worker process also runs a *session server* thread. It announces itself in a Redis
  sorted set of session workers (a heartbeat each second) and reads commands from its own Redis list, its inbox.
  A session's record names the worker it is pinned to; the API pushes that session's commands (prepare, prompt,
  remove, clear, undo, propagate, stop, export, close) into that worker's inbox and waits for the reply on a
  one-off reply list. A direct channel, not a Celery queue, so a click never waits behind a tracking job in the
  worker's task queue: the session server runs beside the job, each session on its own thread. ``prepare``
  computes a frame's per-frame data while the user looks at it; only the latest one waits for the session's
  thread, so scrubbing never queues work in front of a click.
* **Source of truth.** The worker appends every change it applied (prompts, removals, clears) to the session's
  log in Redis before it replies; the video and every frame's latest result are files in storage. The worker's
  in-memory session (the library session with its engine state and caches) is only a cache of that log. Each
  logged prompt keeps the masks its frame had before it, so a replay meets every frame as the prompt did and gives
  the same masks, and ``undo`` restores them. A session opened from a job starts with one ``import`` entry, written
  by the API: the job's prompted frames as mask prompts (its anchors).
* **Recovery.** A worker whose heartbeat is older than ``VOS_SESSION_WORKER_STALE_S`` is presumed dead. The next
  command, or a client waiting on a propagation, re-pins the session to a live worker (compare-and-set in Redis),
  which rebuilds the session by replaying the log and resumes an unfinished propagation. The client sees a delay
  of a few seconds, not an error. A worker that was presumed dead but comes back may not publish anything: every
  published frame is checked against the pin in the same Lua script.
* **Revisions.** Each time a frame's masks change (a prompt, a propagation, an undo) the frame gets the next
  revision number, counted in Redis per frame, so numbers keep increasing across re-pins. Every revision is one
  entry of the session's event stream; a client that reconnects with the last entry id it saw gets every later
  revision once, in order.
* **Expiry.** Every command renews the session's keys for ``VOS_SESSION_IDLE_S``; when they expire, workers drop
  the in-memory session and a janitor removes its files.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis
from celery.signals import worker_ready, worker_shutting_down
from pydantic_settings import BaseSettings, SettingsConfigDict

from vos.engine import FrameResult, ObjectResult
from vos.errors import VosError
from vos.masks import decode_rle, labels_from_masks
from vos.outputs import frame_record
from vos.prompts import parse_prompts
from vos.session import DiskResultStore, ResultStore, Session, StoredFrame, TrackingCancelled
from vos.video import ByteLRUCache, VideoInfo, open_video
from workers.core.models import RESULT_FILES
from workers.core.settings import QUEUES, ServiceSettings, get_settings
from workers.core.storage import Storage
from workers.core.store import connect
from workers.engines import shared_engine
from workers.results import BackgroundResults

log = logging.getLogger(__name__)

DIRECTIONS = ("forward", "backward", "both")
BLOCK_S = 1  # blocking reads of commands and replies wake up this often to check that their peer is alive


class SessionSettings(BaseSettings):
    """Settings of interactive sessions, from ``VOS_SESSION_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="VOS_SESSION_", extra="ignore")

    idle_s: float = 1800.0  # a session nobody used for this long is deleted
    worker_stale_s: float = 5.0  # a session worker silent for this long is presumed dead and its sessions re-pinned
    heartbeat_s: float = 1.0
    reply_timeout_s: float = 120.0  # longest wait for a command's reply (rebuilding a long session included)
    events_maxlen: int = 5_000  # revisions kept in a session's event stream; older ones are read from storage
    frame_cache_mb: int = 64  # decoded frames kept per session on its worker
    feature_cache_mb: int = 128  # the engine's per-frame data (features) kept per session on its worker
    # Defaults to the "sessions" folder of the service's storage: on the volume or bucket the API and workers share
    # (job upkeep leaves it alone: it only looks at folders named like job ids).
    storage_url: str | None = None

    def storage_for(self, service: ServiceSettings) -> str:
        return self.storage_url or service.storage_url.rstrip("/") + "/sessions"


def get_session_settings() -> SessionSettings:
    return SessionSettings()


class SessionCommandError(Exception):
    """A command the worker refused or could not run, with the HTTP status the API should answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------- Redis state

# KEYS: record, revisions, events, frames counter. ARGV: worker, frame, objects JSON, run id, stream maxlen.
# Publishes a frame's new masks only while this worker holds the pin; returns the event JSON with its revision.
_PUBLISH = """
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[1] then return false end
local revision = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
local data = '{"frame": ' .. ARGV[2] .. ', "revision": ' .. revision .. ', "run": ' .. cjson.encode(ARGV[4])
  .. ', "objects": ' .. ARGV[3] .. '}'
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'frame', ARGV[2], 'revision', revision, 'data', data)
return data
"""

# KEYS: record. ARGV: expected worker ('' for none), new worker. Re-pins only if nobody re-pinned meanwhile.
_REPIN = """
if not redis.call('EXISTS', KEYS[1]) then return -1 end
if (redis.call('HGET', KEYS[1], 'worker') or '') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'worker', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class SessionKeys:
    prefix: str

    def record(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}"

    def log(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}:log"

    def revisions(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}:revisions"

    def events(self, session_id: str) -> str:
        return f"{self.prefix}session:{session_id}:events"

    def all(self, session_id: str) -> list[str]:
        return [self.record(session_id), self.log(session_id), self.revisions(session_id), self.events(session_id)]

    def workers(self, queue: str) -> str:
        return f"{self.prefix}session-workers:{queue}"  # sorted set: worker name by last heartbeat

    def inbox(self, worker: str) -> str:
        return f"{self.prefix}session-inbox:{worker}"

    def reply(self, request_id: str) -> str:
        return f"{self.prefix}session-reply:{request_id}"


@dataclass(frozen=True)
class SessionRecord:
    """A session's record in Redis: its video, engine and pin."""

    id: str
    engine: str
    options: dict[str, Any]
    video: str  # file name under the session's input folder
    info: VideoInfo
    worker: str
    queue: str  # the worker pool (cpu or gpu) whose workers may hold the session
    created_at: float
    run: dict[str, Any] | None  # the propagation in progress: {"id", "start", "direction", "total"}
    source_job: str | None

    @classmethod
    def parse(cls, raw: dict[bytes, bytes]) -> SessionRecord:
        get = {k.decode(): v.decode() for k, v in raw.items()}
        info = VideoInfo(int(get["num_frames"]), float(get["fps"]), int(get["width"]), int(get["height"]))
        run = json.loads(get["run"]) if get.get("run") else None
        return cls(get["id"], get["engine"], json.loads(get["options"]), get["video"], info, get.get("worker", ""),
                   get.get("queue") or "cpu", float(get["created_at"]), run, get.get("source_job") or None)


class SessionStore:
    """Every Redis key of sessions: records, logs, revisions, event streams, worker heartbeats and command lists."""

    def __init__(self, settings: ServiceSettings, session_settings: SessionSettings,
                 client: redis.Redis | None = None) -> None:
        self.settings, self.session_settings = settings, session_settings
        self.keys = SessionKeys(settings.key_prefix)
        self.redis = client or connect(settings)
        # Blocking reads wait up to BLOCK_S: their socket timeout must outlast that.
        self.blocking = redis.Redis.from_url(settings.redis_url, socket_timeout=BLOCK_S + settings.redis_timeout_s,
                                             socket_connect_timeout=settings.redis_timeout_s)
        self._publish = self.redis.register_script(_PUBLISH)
        self._repin = self.redis.register_script(_REPIN)

    # ------------------------------------------------------------------ records

    def create(self, session_id: str, engine: str, options: dict[str, Any], queue: str, video: str, info: VideoInfo,
               source_job: str | None = None) -> None:
        record = {"id": session_id, "engine": engine, "options": json.dumps(options), "queue": queue, "video": video,
                  "num_frames": info.num_frames, "fps": repr(info.fps), "width": info.width, "height": info.height,
                  "worker": "", "created_at": repr(time.time()), "run": "", "source_job": source_job or ""}
        with self.redis.pipeline() as pipe:
            pipe.hset(self.keys.record(session_id), mapping=record)
            pipe.expire(self.keys.record(session_id), self._idle_s)
            pipe.execute()

    def get(self, session_id: str) -> SessionRecord | None:
        raw = self.redis.hgetall(self.keys.record(session_id))
        return SessionRecord.parse(raw) if raw else None

    def touch(self, session_id: str) -> None:
        """Keep the session alive for another idle period."""
        with self.redis.pipeline() as pipe:
            for key in self.keys.all(session_id):
                pipe.expire(key, self._idle_s)
            pipe.execute()

    def expires_at(self, session_id: str) -> float | None:
        ttl = self.redis.ttl(self.keys.record(session_id))
        return time.time() + ttl if ttl and ttl > 0 else None

    def delete(self, session_id: str) -> None:
        self.redis.delete(*self.keys.all(session_id))

    def set_run(self, session_id: str, run: dict[str, Any] | None) -> None:
        self.redis.hset(self.keys.record(session_id), "run", json.dumps(run) if run else "")

    def revision_count(self, session_id: str) -> int:
        return sum(int(v) for v in self.redis.hvals(self.keys.revisions(session_id)))

    # ------------------------------------------------------------------ the log (source of truth)

    def append_log(self, session_id: str, entry: dict[str, Any]) -> None:
        self.redis.rpush(self.keys.log(session_id), json.dumps(entry))
        self.touch(session_id)

    def read_log(self, session_id: str) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self.redis.lrange(self.keys.log(session_id), 0, -1)]

    def log_length(self, session_id: str) -> int:
        return int(self.redis.llen(self.keys.log(session_id)))

    def pop_last_log(self, session_id: str) -> dict[str, Any] | None:
        item = self.redis.rpop(self.keys.log(session_id))
        return json.loads(item) if item else None

    # ------------------------------------------------------------------ events

    def publish_frame(self, session_id: str, worker: str, result: FrameResult, run_id: str) -> str | None:
        """Publish a frame's new masks as its next revision; None if this worker no longer holds the session."""
        return self.publish_objects(session_id, worker, result.index, json.dumps(frame_record(result)["objects"]),
                                    run_id)

    def publish_objects(self, session_id: str, worker: str, frame: int, objects_json: str, run_id: str) -> str | None:
        """Like :meth:`publish_frame`, for objects already as JSON records; ``worker`` "" before any pin."""
        keys = [self.keys.record(session_id), self.keys.revisions(session_id), self.keys.events(session_id)]
        data = self._publish(keys=keys, args=[worker, frame, objects_json, run_id, self.session_settings.events_maxlen])
        return data.decode() if data else None

    def publish_run(self, session_id: str, run: dict[str, Any], state: str, error: str | None = None) -> None:
        """A propagation's start or end in the event stream (``state``: running, done, stopped or failed)."""
        event = {**run, "state": state, "error": error}
        self.redis.xadd(self.keys.events(session_id), {"run": json.dumps(event)},
                        maxlen=self.session_settings.events_maxlen, approximate=True)

    # ------------------------------------------------------------------ workers and pinning

    def worker_alive(self, worker: str, queues: tuple[str, ...]) -> None:
        with self.redis.pipeline() as pipe:
            for queue in queues:
                pipe.zadd(self.keys.workers(queue), {worker: time.time()})
            pipe.execute()

    def worker_gone(self, worker: str, queues: tuple[str, ...]) -> None:
        with self.redis.pipeline() as pipe:
            for queue in queues:
                pipe.zrem(self.keys.workers(queue), worker)
            pipe.execute()

    def live_workers(self, queue: str) -> list[str]:
        """Session workers of ``queue`` (cpu or gpu) that sent a heartbeat recently."""
        cutoff = time.time() - self.session_settings.worker_stale_s
        return [m.decode() for m in self.redis.zrangebyscore(self.keys.workers(queue), cutoff, "+inf")]

    def is_alive(self, worker: str, queue: str) -> bool:
        beat = self.redis.zscore(self.keys.workers(queue), worker) if worker else None
        return beat is not None and beat > time.time() - self.session_settings.worker_stale_s

    def ensure_pinned(self, session_id: str) -> tuple[str, str]:
        """The live worker holding the session and its pool, re-pinning the session to a live worker of its pool
        (chosen at random) if needed."""
        while True:
            record = self.get(session_id)
            if record is None:
                raise SessionCommandError(404, f"no session {session_id!r} (it may have expired)")
            if self.is_alive(record.worker, record.queue):
                return record.worker, record.queue
            live = self.live_workers(record.queue)
            if not live:
                raise SessionCommandError(503, no_worker_message(record.queue, record.engine))
            chosen = live[secrets.randbelow(len(live))]
            code = self._repin(keys=[self.keys.record(session_id)], args=[record.worker, chosen])
            if code == 1:
                if record.worker:
                    log.warning("session %s re-pinned from silent worker %s to %s", session_id, record.worker, chosen)
                return chosen, record.queue

    # ------------------------------------------------------------------ commands

    def call(self, session_id: str, op: str, args: dict[str, Any] | None = None,
             timings: dict[str, float] | None = None) -> dict[str, Any]:
        """Run a command on the session's worker and return its reply; re-pins and resends if the worker dies.

        ``timings``, if given, gets ``worker_total_ms``: the worker's time from receiving the command to replying."""
        request_id = secrets.token_hex(12)
        command = json.dumps({"id": request_id, "session": session_id, "op": op, "args": args or {}})
        deadline = time.monotonic() + self.session_settings.reply_timeout_s
        while time.monotonic() < deadline:
            worker, queue = self.ensure_pinned(session_id)
            with self.redis.pipeline() as pipe:
                pipe.rpush(self.keys.inbox(worker), command)
                pipe.expire(self.keys.inbox(worker), 3600)  # the inbox of a dead worker goes away
                pipe.execute()
            reply = self._await_reply(request_id, worker, queue, deadline)
            if reply is not None and not reply.get("moved"):  # moved: resent to the session's new worker
                if timings is not None:
                    timings["worker_total_ms"] = reply.get("worker_total_ms", 0.0)
                if not reply["ok"]:
                    raise SessionCommandError(reply["status"], reply["detail"])
                return reply["result"]
        raise SessionCommandError(504, f"the session's worker did not answer within "
                                       f"{self.session_settings.reply_timeout_s:g} s")

    def _await_reply(self, request_id: str, worker: str, queue: str, deadline: float) -> dict[str, Any] | None:
        """The reply, or None once the worker is presumed dead (the caller resends to another worker)."""
        while time.monotonic() < deadline:
            item = self.blocking.blpop([self.keys.reply(request_id)], timeout=BLOCK_S)
            if item is not None:
                return json.loads(item[1])
            if not self.is_alive(worker, queue):
                return None
        return None

    def send_reply(self, request_id: str, reply: dict[str, Any]) -> None:
        with self.redis.pipeline() as pipe:
            pipe.rpush(self.keys.reply(request_id), json.dumps(reply))
            pipe.expire(self.keys.reply(request_id), 60)
            pipe.execute()

    @property
    def _idle_s(self) -> int:
        return max(1, int(self.session_settings.idle_s))


def session_storage(settings: ServiceSettings, session_settings: SessionSettings) -> Storage:
    return Storage(session_settings.storage_for(settings))


# ---------------------------------------------------------------------------------------------- frames and results


class FrameReader:
    """Thread-safe random access to a stored video's frames (the library's decoders), with a byte-bounded cache."""

    def __init__(self, path: str | Path, cache_bytes: int = 64 << 20) -> None:
        self.video = open_video(path)
        self._cache = ByteLRUCache(cache_bytes)
        self._lock = threading.Lock()

    def frame(self, index: int) -> np.ndarray:
        with self._lock:
            return self._cache.get_or_compute(index, lambda: self.video.frame(index))


class PublishedResults(ResultStore):
    """The library session's result store on a worker: frames the session computed itself are kept on local
    disk; any other frame is read from the session's published records in storage, so a session rebuilt on
    another worker propagates from the masks the client last saw."""

    def __init__(self, load: Callable[[int], dict[str, Any] | None], info: VideoInfo) -> None:
        self._own = DiskResultStore()
        self._computed: set[int] = set()
        self._load, self._info = load, info

    def get(self, index: int) -> StoredFrame | None:
        if index in self._computed:
            return self._own.get(index)
        record = self._load(index)
        return self.stored_frame(record["objects"], record["revision"]) if record is not None else None

    def stored_frame(self, objects: list[dict[str, Any]], revision: int) -> StoredFrame:
        """A frame's published objects (COCO RLE records) as the library stores them."""
        masks = {o["object_id"]: decode_rle(o["rle"]) for o in objects}
        labels = labels_from_masks(masks, self._info.height, self._info.width)
        return StoredFrame(revision, labels, {o["object_id"]: o["score"] for o in objects})

    def forget_computed(self) -> None:
        """Read every frame from the published records again (after a replay, they are the latest)."""
        self._computed.clear()

    def put(self, index: int, frame: StoredFrame) -> None:
        self._own.put(index, frame)
        self._computed.add(index)

    def objects(self, index: int) -> dict[int, float]:
        if index in self._computed:
            return self._own.objects(index)
        record = self._load(index)
        return {o["object_id"]: o["score"] for o in record["objects"]} if record else {}

    def close(self) -> None:
        self._own.close()


# ---------------------------------------------------------------------------------------------- the session server


class LiveSession:
    """A session held in this worker's memory: the library session and what the log replay left."""

    def __init__(self, record: SessionRecord, library: Session, applied: int, request_ids: set[str],
                 stop: threading.Event) -> None:
        self.record, self.library = record, library
        self.applied = applied  # log entries replayed or applied: a longer log means another worker changed it
        self.request_ids = request_ids  # commands already in the log, so a resent command is applied once
        self.stop = stop  # set to stop the propagation in progress


class SessionServer:
    """Runs in every worker process: heartbeat, inbox reader and janitor threads, and the sessions it holds."""

    def __init__(self, settings: ServiceSettings, session_settings: SessionSettings,
                 queues: tuple[str, ...] = QUEUES) -> None:
        self.store = SessionStore(settings, session_settings)
        self.storage = session_storage(settings, session_settings)
        self.queues = queues  # sessions of these worker pools may be pinned here
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.sessions: dict[str, LiveSession] = {}
        # One thread per session: its commands run in order, and sessions never wait on each other (not even on
        # one being rebuilt). The stop event of a session is set from the inbox thread, past the queued commands.
        self._threads: dict[str, ThreadPoolExecutor] = {}
        self._stops: dict[str, threading.Event] = {}
        self._prepares: dict[str, dict[str, Any]] = {}  # session -> its prepare command still waiting to run
        self._propagating: set[str] = set()  # sessions whose thread is busy propagating
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def start(self) -> None:
        self.store.worker_alive(self.name, self.queues)
        for target in (self._heartbeat, self._read_inbox, self._janitor):
            threading.Thread(target=target, name=f"vos-{target.__name__.strip('_')}", daemon=True).start()
        log.info("session server %s started", self.name)

    def stop(self) -> None:
        self._stop.set()
        self.store.worker_gone(self.name, self.queues)

    # ------------------------------------------------------------------ threads

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.store.session_settings.heartbeat_s):
            try:
                self.store.worker_alive(self.name, self.queues)
            except redis.RedisError as error:  # a Redis blip must not silence the worker for good
                log.warning("session heartbeat failed: %s", error)

    def _read_inbox(self) -> None:
        inbox = self.store.keys.inbox(self.name)
        while not self._stop.is_set():
            try:
                item = self.store.blocking.blpop([inbox], timeout=BLOCK_S)
            except redis.RedisError as error:
                log.warning("session inbox read failed: %s", error)
                self._stop.wait(1)
                continue
            if item is not None:
                self._dispatch(json.loads(item[1]))

    def _janitor(self) -> None:
        while not self._stop.wait(max(1.0, min(30.0, self.store.session_settings.idle_s / 4))):
            try:
                self.expire_sessions()
            except (redis.RedisError, OSError) as error:
                log.warning("session janitor failed: %s", error)

    def expire_sessions(self, now: float | None = None) -> None:
        """Drop sessions whose record expired or moved away, and files of sessions without a record."""
        now = time.time() if now is None else now
        with self._lock:
            held = set(self.sessions) | set(self._threads) | set(self._stops)
        for session_id in held:
            record = self.store.get(session_id)
            if record is None or record.worker != self.name:
                self._forget(session_id)
        for session_id in self.storage.job_ids():
            if self.store.get(session_id) is None and self.storage.modified(session_id) < now - 60:
                self.storage.remove_job(session_id)  # 60 s: a session being created has files before its record

    # ------------------------------------------------------------------ commands

    def _dispatch(self, command: dict[str, Any]) -> None:
        session_id, op = command["session"], command["op"]
        with self._lock:
            stop = self._stops.setdefault(session_id, threading.Event())
            thread = self._threads.get(session_id)
            if thread is None and op != "close":
                thread = self._threads[session_id] = ThreadPoolExecutor(1, thread_name_prefix=f"vos-{session_id[:6]}")
        if op in ("stop", "close") or op in CHANGES or op == "propagate":
            stop.set()  # at once: a change makes the frames a propagation in progress would still send outdated
        if op in ("stop", "close"):
            if op == "close":
                self._forget(session_id)
            self.store.send_reply(command["id"], {"ok": True, "result": {}})
            return
        assert thread is not None
        if op == "prepare":
            self._queue_prepare(session_id, command, thread)
        else:
            thread.submit(self._run, session_id, command, time.perf_counter())

    def _queue_prepare(self, session_id: str, command: dict[str, Any], thread: ThreadPoolExecutor) -> None:
        """Prepare only the frame the user looks at now: a prepare still waiting for the session's thread is
        answered as superseded and replaced, so scrubbing never queues work in front of a click. While the session
        propagates, nothing is prepared (the page asks again when the propagation ends)."""
        with self._lock:
            waiting = self._prepares.pop(session_id, None)
            busy = session_id in self._propagating
            if not busy:
                self._prepares[session_id] = command
        if waiting is not None:
            self.store.send_reply(waiting["id"], _not_prepared(waiting, "superseded by a later frame"))
        if busy:
            self.store.send_reply(command["id"], _not_prepared(command, "the session is propagating"))
        elif waiting is None:
            thread.submit(self._run_prepare, session_id, time.perf_counter())

    def _run_prepare(self, session_id: str, received: float) -> None:
        with self._lock:
            command = self._prepares.pop(session_id, None)
        if command is not None:
            self._run(session_id, command, received)

    def _run(self, session_id: str, command: dict[str, Any], received: float) -> None:
        try:
            live = self._live(session_id, command["op"])
            reply: dict[str, Any] = {"ok": True, "result": self._execute(live, command)}
        except Exception as error:  # noqa: BLE001 - turned into a reply; unexpected ones are logged
            reply = _error_reply(error)
        reply["worker_total_ms"] = round(1000 * (time.perf_counter() - received), 1)  # queue wait included
        self.store.send_reply(command["id"], reply)

    def _execute(self, live: LiveSession, command: dict[str, Any]) -> dict[str, Any]:
        op, args = command["op"], command["args"]
        if op == "propagate":
            return self._start_propagation(live, args)
        if op == "export":
            return self._export(live)
        if op == "resume":
            return {}
        if op == "undo":
            return self._undo(live)
        if op == "prepare":
            begin = time.perf_counter()
            live.library.prepare(int(args["frame"]))
            return {"frame": int(args["frame"]), "prepared": True,
                    "worker_ms": round(1000 * (time.perf_counter() - begin), 1)}
        assert op in CHANGES, f"unknown session command {op!r}"
        if command["id"] in live.request_ids:  # resent after a re-pin, but applied and logged already
            frame = _frame_of(op, args)
            return self._publish(live, live.library.result(frame, with_image=False)) if frame is not None else {}
        frame = _frame_of(op, args)
        before = self._published(live.record.id, frame) if frame is not None else None
        begin = time.perf_counter()
        known = args.get("object_id") in live.library.objects
        changed = _apply(live.library, op, args)
        republish = changed
        if op == "remove" and not known:  # e.g. an object of the job the session was opened from
            changed, republish = self._remove_published(live, args["object_id"]), []
        worker_ms = round(1000 * (time.perf_counter() - begin), 1)
        self.store.append_log(live.record.id, {"id": command["id"], "op": op, "args": args,
                                               "before": before["objects"] if before else []})
        live.applied += 1
        live.request_ids.add(command["id"])
        published = [self._publish(live, live.library.result(index, with_image=False)) for index in republish]
        return {**published[0], "worker_ms": worker_ms} if frame is not None else {"changed": changed}

    def _remove_published(self, live: LiveSession, object_id: int) -> list[int]:
        """Remove an object the library session never had from the published frames, publishing each (the library
        then reads them without it). Returns those frames; it is an error if no frame has the object."""
        frames = [index for index in range(live.record.info.num_frames)
                  if object_id in {o["object_id"] for o in (self._published(live.record.id, index) or
                                                               {"objects": []})["objects"]}]
        if not frames:
            raise SessionCommandError(422, f"object {object_id} is not in this session")
        for index in frames:
            record = self._published(live.record.id, index)
            assert record is not None
            kept = [o for o in record["objects"] if o["object_id"] != object_id]
            data = self.store.publish_objects(live.record.id, self.name, index, json.dumps(kept), "")
            if data is None:
                raise SessionMoved(f"session {live.record.id} moved to another worker")
            self.storage.write_bytes(self.storage.frame_path(live.record.id, index), data.encode())
        return frames

    def _publish(self, live: LiveSession, result: FrameResult, run_id: str = "") -> dict[str, Any]:
        """Publish a frame as its next revision and keep it in storage (where exports and rebuilds read it)."""
        data = self.store.publish_frame(live.record.id, self.name, result, run_id)
        if data is None:
            raise SessionMoved(f"session {live.record.id} moved to another worker")
        self.storage.write_bytes(self.storage.frame_path(live.record.id, result.index), data.encode())
        return json.loads(data)

    def _published(self, session_id: str, frame: int | None) -> dict[str, Any] | None:
        """The latest published record of a frame, or None if it has none."""
        if frame is None:
            return None
        try:
            return json.loads(self.storage.read_bytes(self.storage.frame_path(session_id, frame)))
        except FileNotFoundError:
            return None

    def _undo(self, live: LiveSession) -> dict[str, Any]:
        """Drop the last prompt: its frame gets back the masks it had before (as a new revision), and the
        session is rebuilt from the shorter log."""
        entries = self.store.read_log(live.record.id)
        if not entries or entries[-1]["op"] != "prompt":
            raise SessionCommandError(409, "nothing to undo: the last change was not a prompt")
        last = entries[-1]
        frame = last["args"]["frame_index"]
        before = [ObjectResult(o["object_id"], decode_rle(o["rle"]), o["score"]) for o in last["before"]]
        restored = FrameResult(frame, {r.object_id: r for r in before}, live.record.info.height,
                               live.record.info.width)
        published = self._publish(live, restored)
        self.store.pop_last_log(live.record.id)
        _close(live.library)
        rebuilt = self._rebuild(live.record)
        live.library, live.applied, live.request_ids = rebuilt.library, rebuilt.applied, rebuilt.request_ids
        return published

    # ------------------------------------------------------------------ propagation

    def _start_propagation(self, live: LiveSession, args: dict[str, Any]) -> dict[str, Any]:
        start, direction = int(args["start"]), args["direction"]
        if not any(r.present for r in live.library.result(start, with_image=False).objects.values()):
            raise SessionCommandError(409, f"no object has a mask on frame {start}: prompt an object there first, "
                                           "or propagate from a frame that has masks")
        total = {"forward": live.record.info.num_frames - start - 1, "backward": start,
                 "both": live.record.info.num_frames - 1}[direction]
        run = {"id": args.get("run_id") or secrets.token_hex(6), "start": start, "direction": direction,
               "total": total}
        live.stop.clear()
        self.store.set_run(live.record.id, run)
        self.store.publish_run(live.record.id, run, "running")
        with self._lock:
            self._propagating.add(live.record.id)
            self._threads[live.record.id].submit(self._propagate, live, run)
        return run

    def _propagate(self, live: LiveSession, run: dict[str, Any]) -> None:
        state, error = "done", None
        try:
            for result in live.library.propagate(run["start"], run["direction"], should_stop=live.stop.is_set):
                self._publish(live, result, run["id"])
        except TrackingCancelled:
            state = "stopped"
        except SessionMoved:
            return  # the new worker resumes the propagation
        except Exception as failure:  # noqa: BLE001 - reported to the client in the run's end event
            state, error = "failed", _error_reply(failure)["detail"]
        finally:
            with self._lock:
                self._propagating.discard(live.record.id)
        self.store.set_run(live.record.id, None)
        self.store.publish_run(live.record.id, run, state, error)

    # ------------------------------------------------------------------ export

    def _export(self, live: LiveSession) -> dict[str, Any]:
        """The job result files (the library's one writer) from the latest published revision of every frame."""
        record, session_id = live.record, live.record.id
        with tempfile.TemporaryDirectory(prefix="vos-session-") as tmp:
            with BackgroundResults(tmp, record.info) as results:
                for index in range(record.info.num_frames):
                    published = self._published(session_id, index)
                    objects = {o["object_id"]: ObjectResult(o["object_id"], decode_rle(o["rle"]), o["score"])
                               for o in (published or {"objects": []})["objects"]}
                    results.write(FrameResult(index, objects, record.info.height, record.info.width,
                                              image=live.library.image(index)))
            results.upload(self.storage, session_id)
        return {"files": sorted(RESULT_FILES)}

    # ------------------------------------------------------------------ holding sessions

    def _live(self, session_id: str, op: str) -> LiveSession:
        """The session in memory, rebuilt from its log if this worker does not hold it (in the session's thread)."""
        record = self.store.get(session_id)
        if record is None:
            raise SessionCommandError(404, f"no session {session_id!r} (it may have expired)")
        if record.worker != self.name:  # re-pinned while this worker was presumed dead: the API resends
            self._forget(session_id)
            raise SessionMoved(f"session {session_id} is pinned to {record.worker}")
        with self._lock:
            live = self.sessions.get(session_id)
        if live is not None and self.store.log_length(session_id) != live.applied:
            _close(live.library)  # changed by another worker while this one was presumed dead
            live = None
        if live is None:
            live = self._rebuild(record)
            with self._lock:
                self.sessions[session_id] = live
            if record.run is not None:  # the previous worker died while propagating
                self._resume(live, record.run, op)
        self.store.touch(session_id)
        return live

    def _resume(self, live: LiveSession, run: dict[str, Any], op: str) -> None:
        """Go on with the dead worker's propagation, unless this command changes the session (it would stop it)."""
        if op in CHANGES or op == "propagate":
            self.store.set_run(live.record.id, None)
            self.store.publish_run(live.record.id, run, "stopped")
        else:
            self._start_propagation(live, {**run, "run_id": run["id"]})

    def _rebuild(self, record: SessionRecord) -> LiveSession:
        """The session as its log says: open the video and replay every logged change, publishing nothing."""
        path = self.storage.path(record.id, "input", record.video)
        if not self.storage.is_local:
            local = Path(tempfile.mkdtemp(prefix="vos-session-")) / record.video
            self.storage.fs.get_file(path, str(local))
            path = str(local)
        engine = shared_engine(record.engine, record.options)
        results = PublishedResults(lambda index: self._published(record.id, index), record.info)
        settings = self.store.session_settings
        library = Session(engine, open_video(path), results, frame_cache_bytes=settings.frame_cache_mb << 20,
                          feature_cache_bytes=settings.feature_cache_mb << 20)
        entries = self.store.read_log(record.id)
        for entry in entries:
            if entry["op"] == "prompt":  # the prompt meets its frame as it was then, so it gives the same masks
                results.put(entry["args"]["frame_index"], results.stored_frame(entry["before"], 0))
            _apply(library, entry["op"], entry["args"])
        results.forget_computed()
        if entries:
            log.info("session %s rebuilt on %s from %d logged changes", record.id, self.name, len(entries))
        with self._lock:
            stop = self._stops.setdefault(record.id, threading.Event())
        return LiveSession(record, library, len(entries), {e["id"] for e in entries}, stop)

    def _forget(self, session_id: str) -> None:
        with self._lock:
            live = self.sessions.pop(session_id, None)
            thread = self._threads.pop(session_id, None)
            stop = self._stops.pop(session_id, None)
            waiting = self._prepares.pop(session_id, None)
        if waiting is not None:
            self.store.send_reply(waiting["id"], _not_prepared(waiting, "the session left this worker"))
        if stop is not None:
            stop.set()
        if thread is not None:
            if live is not None:
                thread.submit(_close, live.library)  # after the commands already queued
            thread.shutdown(wait=False)


class SessionMoved(Exception):
    """This worker no longer holds the session (it was presumed dead and the session re-pinned)."""


CHANGES = ("prompt", "remove", "clear")


def _close(library: Session) -> None:
    """Release the library session's results and caches, and its video (the session leaves that to its owner)."""
    library.close()
    library.video.close()


def _not_prepared(command: dict[str, Any], reason: str) -> dict[str, Any]:
    return {"ok": True, "result": {"frame": command["args"]["frame"], "prepared": False, "reason": reason}}


def _frame_of(op: str, args: dict[str, Any]) -> int | None:
    """The one frame a change is about (None for a removal, which changes many)."""
    return {"prompt": args.get("frame_index"), "clear": args.get("frame")}.get(op)


def _apply(library: Session, op: str, args: dict[str, Any]) -> list[int]:
    """Apply one logged change to the library session; returns the frames whose masks changed."""
    if op == "prompt":
        return [library.add_prompt(parse_prompts([args])[0]).index]
    if op == "remove":
        if args["object_id"] not in library.objects:
            return []  # an object only in published frames (an opened job's): removed from them when applied
        return library.remove_object(args["object_id"])
    if op == "clear":
        return [library.clear_prompts(args["object_id"], args["frame"]).index]
    if op == "import":  # an opened job's anchors; its frames are published already (see api.sessions._import_job)
        for anchor in args["anchors"]:
            library.add_prompt(parse_prompts([anchor])[0])
        return []
    raise AssertionError(f"unknown session change {op!r}")


def no_worker_message(queue: str, engine: str) -> str:
    return (f"no session worker serves the {queue!r} pool, where {engine!r} sessions run; start a worker "
            f"(vos serve starts one; or celery -A workers.app worker -Q {queue})")


def _error_reply(error: BaseException) -> dict[str, Any]:
    if isinstance(error, SessionMoved):
        return {"ok": False, "moved": True}
    if isinstance(error, SessionCommandError):
        return {"ok": False, "status": error.status, "detail": str(error)}
    if isinstance(error, VosError):
        return {"ok": False, "status": 422, "detail": str(error)}
    log.exception("session command failed", exc_info=error)
    return {"ok": False, "status": 500, "detail": f"internal error in the session worker ({type(error).__name__})"}


# ---------------------------------------------------------------------------------------------- worker hooks

_server: SessionServer | None = None


@worker_ready.connect
def _start_session_server(sender: object = None, **_: object) -> None:
    global _server
    consumed = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    consume_from = getattr(consumed, "consume_from", None) or {}
    queues = tuple(name for name in QUEUES if name in consume_from) or QUEUES
    _server = SessionServer(get_settings(), get_session_settings(), queues)
    _server.start()


@worker_shutting_down.connect
def _stop_session_server(**_: object) -> None:
    if _server is not None:
        _server.stop()
