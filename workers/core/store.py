"""The job store: every Redis key, script and stream of the service, for the workers (sync) and the API (async).

Redis holds each job's record (a hash), its bounded frame stream, its worker lease, the per-state id sets, worker
heartbeats and the Celery broker's keys, all under the configured prefix. Every state change and every published
frame goes through a Lua script, so a cancelled job is never resurrected, a frame is never published twice, and
a job's state, lease and stream stay consistent whichever worker (or reaper) touches them.

Clients retry connection errors and timeouts with exponential backoff for about ``redis_retry_s``: a Redis
restart or a short freeze delays the service, it does not fail jobs. Every script is safe to run twice.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from workers.core.models import ACTIVE_STATES, Job, JobState, redis_fields
from workers.core.settings import QUEUES, ServiceSettings

BACKOFF_CAP_S = 2.0


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

    def revisions(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:revisions"  # hash: frame index -> latest published revision

    def state_set(self, state: JobState | str) -> str:
        return f"{self.prefix}state:{JobState(state).value}"

    @property
    def state_prefix(self) -> str:
        return f"{self.prefix}state:"

    @property
    def finished(self) -> str:
        return f"{self.prefix}finished"  # sorted set: job id by finish time, for retention

    @property
    def frames_counter(self) -> str:
        return f"{self.prefix}stats:frames"

    def workers(self, queue: str) -> str:
        return f"{self.prefix}workers:{queue}"  # sorted set: worker name by last heartbeat

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    @property
    def broker_prefix(self) -> str:
        return f"{self.prefix}celery:"

    def queue(self, name: str) -> str:
        return f"{self.broker_prefix}{name}"


# KEYS: job hash, stream, finished zset. ARGV: new state, job id, state-set prefix, now, n allowed, allowed...,
# field, value, ... Moves the job to a new state only from an allowed one, keeps the per-state sets in step and, for
# a final state, appends the end event to the stream, so readers learn the outcome after the last frame.
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

# KEYS: job hash, stream, lease, frames counter, revisions. ARGV: token, index, record JSON, maxlen, lease ms, revision.
# Publishes a frame only while this worker holds the lease of a running job: a new frame beyond the last published
# one, or a later revision of a published one. A re-run after a crash recomputes from frame 0 without streaming
# any frame twice.
_PUBLISH = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return -2 end
redis.call('PEXPIRE', KEYS[3], ARGV[5])
local index = tonumber(ARGV[2])
local revision = tonumber(ARGV[6])
if index <= tonumber(redis.call('HGET', KEYS[1], 'last_frame') or '-1') then
  if revision <= tonumber(redis.call('HGET', KEYS[5], ARGV[2]) or '0') then return 0 end
  redis.call('HSET', KEYS[5], ARGV[2], revision)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'frame', ARGV[2], 'data', ARGV[3], 'revision', revision)
  return 1
end
if revision > 0 then redis.call('HSET', KEYS[5], ARGV[2], revision) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'frame', ARGV[2], 'data', ARGV[3], 'revision', revision)
redis.call('HSET', KEYS[1], 'last_frame', index, 'frames_done', index + 1)
redis.call('INCR', KEYS[4])
return 1
"""

# KEYS: job hash, lease. ARGV: token, lease ms, compute seconds, running-set, retrying-set, job id.
# Renews the lease. A lease that expired while Redis was unreachable is taken back if nobody else took the job;
# a job the reaper marked for retry meanwhile is taken back too (its new task then finds the lease held).
_RENEW = """
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return -1 end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -3 end
if state == 'retrying' and not holder then
  redis.call('HSET', KEYS[1], 'state', 'running')
  redis.call('SREM', ARGV[5], ARGV[6])
  redis.call('SADD', ARGV[4], ARGV[6])
elseif state ~= 'running' then
  return -2
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'compute_s', ARGV[3])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: job hash, lease, stream, finished. ARGV: job id, state-set prefix, now, max attempts, reason.
# A running job without a lease lost its worker: queue it again (1), or fail it after too many attempts (2).
_REQUEUE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if attempts >= tonumber(ARGV[4]) then
  local error = 'the job was interrupted ' .. attempts .. ' times (' .. ARGV[5] .. '); it is not retried again'
  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', error, 'finished_at', ARGV[3])
  redis.call('SREM', ARGV[2] .. 'running', ARGV[1])
  redis.call('SADD', ARGV[2] .. 'failed', ARGV[1])
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
  redis.call('XADD', KEYS[3], '*', 'end', 'failed', 'error', error)
  return 2
end
redis.call('HSET', KEYS[1], 'state', 'retrying', 'retry_reason', ARGV[5], 'dispatched_at', ARGV[3])
redis.call('SREM', ARGV[2] .. 'running', ARGV[1])
redis.call('SADD', ARGV[2] .. 'retrying', ARGV[1])
return 1
"""

# KEYS: job hash, stream. ARGV: stream grace seconds. Marks a job's files deleted; readers still see its end entry.
_MARK_DELETED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'files_deleted', '1')
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


class LeaseLost(Exception):
    """This worker may no longer run the job: another worker took it, it stopped running, or its record vanished."""

    def __init__(self, message: str, vanished: bool = False) -> None:
        super().__init__(message)
        self.vanished = vanished


_LEASE_ERRORS = {-1: "the job's lease passed to another worker", -2: "the job is no longer running",
                 -3: "the job's record vanished from the store"}


NOT_LOST, REQUEUED, GAVE_UP = 0, 1, 2  # outcomes of JobStore.requeue_unleased


@dataclass(frozen=True)
class StreamEntry:
    """One entry of a job's frame stream: a frame record (maybe a revision of an earlier one), or the job's end."""

    entry_id: str
    frame: int | None
    data: str | None
    revision: int
    end_state: str | None
    error: str | None

    @classmethod
    def parse(cls, entry_id: bytes | str, fields: Mapping[bytes, bytes]) -> StreamEntry:
        get = {_text(k): _text(v) for k, v in fields.items()}
        frame = int(get["frame"]) if "frame" in get else None
        return cls(_text(entry_id), frame, get.get("data"), int(get.get("revision") or 0), get.get("end"),
                   get.get("error") or None)


def connect(settings: ServiceSettings) -> redis.Redis:
    """A client that retries connection errors and timeouts with backoff for about ``redis_retry_s``."""
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=settings.redis_timeout_s, socket_connect_timeout=settings.redis_timeout_s,
        retry=Retry(ExponentialWithJitterBackoff(cap=BACKOFF_CAP_S, base=0.05), _retries(settings)),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], health_check_interval=30)


def connect_async(settings: ServiceSettings, block_s: float) -> aioredis.Redis:
    """The async client; its socket timeout outlasts blocking stream reads of ``block_s`` seconds."""
    return aioredis.Redis.from_url(
        settings.redis_url, socket_timeout=block_s + settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry=AsyncRetry(ExponentialWithJitterBackoff(cap=BACKOFF_CAP_S, base=0.05), _retries(settings)),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], health_check_interval=30)


def _retries(settings: ServiceSettings) -> int:
    return max(1, math.ceil(settings.redis_retry_s / BACKOFF_CAP_S))


class JobStore:
    """Synchronous access to job state (workers, the reaper, and the API's thread pool)."""

    def __init__(self, settings: ServiceSettings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis = client or connect(settings)
        self._transition = self.redis.register_script(_TRANSITION)
        self._publish = self.redis.register_script(_PUBLISH)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._requeue = self.redis.register_script(_REQUEUE)
        self._mark_deleted = self.redis.register_script(_MARK_DELETED)

    # ------------------------------------------------------------------ records

    def create(self, job: Job) -> None:
        assert job.state is JobState.QUEUED, "a new job starts queued"
        with self.redis.pipeline() as pipe:
            pipe.hset(self.keys.job(job.id), mapping=redis_fields(**job.model_dump()))
            pipe.sadd(self.keys.state_set(JobState.QUEUED), job.id)
            pipe.execute()

    def get(self, job_id: str) -> Job | None:
        raw = self.redis.hgetall(self.keys.job(job_id))
        return Job.from_redis(raw) if raw else None

    def transition(self, job_id: str, state: JobState, allowed_from: tuple[JobState, ...], **fields: Any) -> bool:
        """Set ``state`` (and ``fields``) if the job is in one of ``allowed_from``; False otherwise."""
        args: list[Any] = [state.value, job_id, self.keys.state_prefix, repr(time.time()), len(allowed_from)]
        args += [s.value for s in allowed_from]
        for name, value in redis_fields(**fields).items():
            args += [name, value]
        keys = [self.keys.job(job_id), self.keys.stream(job_id), self.keys.finished]
        return bool(self._transition(keys=keys, args=args))

    def cancel(self, job_id: str, stream_grace_s: float) -> bool:
        """Cancel an active job and mark its files deleted; False if the job does not exist."""
        self.transition(job_id, JobState.CANCELLED, ACTIVE_STATES, finished_at=time.time(),
                        error="cancelled by the client")
        keys = [self.keys.job(job_id), self.keys.stream(job_id)]
        return bool(self._mark_deleted(keys=keys, args=[int(stream_grace_s)]))

    def delete_records(self, job_id: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.delete(self.keys.job(job_id), self.keys.stream(job_id), self.keys.lease(job_id),
                        self.keys.revisions(job_id))
            for state in JobState:
                pipe.srem(self.keys.state_set(state), job_id)
            pipe.zrem(self.keys.finished, job_id)
            pipe.execute()

    def exists(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.keys.job(job_id)))

    def finished_before(self, cutoff: float) -> list[str]:
        return [_text(m) for m in self.redis.zrangebyscore(self.keys.finished, "-inf", cutoff)]

    def ids_in_state(self, state: JobState) -> list[str]:
        return sorted(_text(m) for m in self.redis.smembers(self.keys.state_set(state)))

    def state_counts(self) -> dict[JobState, int]:
        with self.redis.pipeline(transaction=False) as pipe:
            for state in JobState:
                pipe.scard(self.keys.state_set(state))
            return dict(zip(JobState, pipe.execute()))

    def frames_processed(self) -> int:
        return int(self.redis.get(self.keys.frames_counter) or 0)

    def queue_depth(self, queue: str) -> int:
        return int(self.redis.llen(self.keys.queue(queue)))

    # ------------------------------------------------------------------ leases and frames (worker side)

    def acquire_lease(self, job_id: str) -> str | None:
        """A token if this worker may run the job now; None while another live worker holds it."""
        token = secrets.token_hex(8)
        ok = self.redis.set(self.keys.lease(job_id), token, nx=True, px=self._lease_ms)
        return token if ok else None

    def release_lease(self, job_id: str, token: str) -> None:
        self._release(keys=[self.keys.lease(job_id)], args=[token])

    def renew_lease(self, job_id: str, token: str, compute_s: float) -> None:
        """Renew the lease; raise :class:`LeaseLost` if the job was cancelled, taken over or vanished."""
        code = self._renew(keys=[self.keys.job(job_id), self.keys.lease(job_id)],
                           args=[token, self._lease_ms, repr(compute_s), self.keys.state_set(JobState.RUNNING),
                                 self.keys.state_set(JobState.RETRYING), job_id])
        if code < 0:
            raise LeaseLost(_LEASE_ERRORS[code], vanished=code == -3)

    def publish_frame(self, job_id: str, token: str, index: int, record: str, revision: int = 0) -> bool:
        """Append a frame (or a later revision of one) to the stream; False if it was published before."""
        keys = [self.keys.job(job_id), self.keys.stream(job_id), self.keys.lease(job_id), self.keys.frames_counter,
                self.keys.revisions(job_id)]
        code = self._publish(keys=keys, args=[token, index, record, self.settings.stream_maxlen, self._lease_ms,
                                              revision])
        if code < 0:
            raise LeaseLost(_LEASE_ERRORS[code])
        return code == 1

    def requeue_unleased(self, job_id: str, reason: str) -> int:
        """Mark a running job whose lease expired for retry (:data:`REQUEUED`), or fail it after too many
        attempts (:data:`GAVE_UP`); :data:`NOT_LOST` if it has a lease or is not running."""
        keys = [self.keys.job(job_id), self.keys.lease(job_id), self.keys.stream(job_id), self.keys.finished]
        return int(self._requeue(keys=keys, args=[job_id, self.keys.state_prefix, repr(time.time()),
                                                  self.settings.max_attempts, reason]))

    # ------------------------------------------------------------------ workers and locks

    def worker_alive(self, name: str, queues: tuple[str, ...]) -> None:
        now = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.zadd(self.keys.workers(queue), {name: now})
            pipe.execute()

    def worker_gone(self, name: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                pipe.zrem(self.keys.workers(queue), name)
            pipe.execute()

    def live_workers(self) -> dict[str, int]:
        """Workers with a recent heartbeat, per queue."""
        since = time.time() - self.settings.worker_alive_s
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                pipe.zcount(self.keys.workers(queue), since, "+inf")
            return dict(zip(QUEUES, (int(n) for n in pipe.execute())))

    def try_lock(self, name: str, seconds: float) -> bool:
        """Take a lock for ``seconds`` (it is never released early: it spaces out periodic work across workers)."""
        return bool(self.redis.set(self.keys.lock(name), "1", nx=True, px=int(seconds * 1000)))

    @property
    def _lease_ms(self) -> int:
        return int(self.settings.lease_s * 1000)


class AsyncJobStore:
    """Asynchronous reads for the API's event loop: job records and the frame streams."""

    def __init__(self, settings: ServiceSettings, block_s: float) -> None:
        self.keys = Keys(settings.key_prefix)
        self.redis = connect_async(settings, block_s)

    async def get(self, job_id: str) -> Job | None:
        raw = await self.redis.hgetall(self.keys.job(job_id))
        return Job.from_redis(raw) if raw else None

    async def read_stream(self, job_id: str, cursor: str, count: int, block_ms: int | None) -> list[StreamEntry]:
        reply = await self.redis.xread({self.keys.stream(job_id): cursor}, count=count, block=block_ms)
        return [StreamEntry.parse(entry_id, fields) for entry_id, fields in (reply[0][1] if reply else [])]

    async def end_state(self, job_id: str) -> tuple[JobState | None, str | None]:
        """The job's state and error; (None, None) if its record vanished."""
        state, error = await self.redis.hmget(self.keys.job(job_id), ["state", "error"])
        return (JobState(_text(state)) if state else None), (_text(error) if error else None)

    async def close(self) -> None:
        await self.redis.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
