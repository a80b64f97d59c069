"""Read a job's frames in order, exactly once, from its Redis stream with storage as the fallback.

Workers persist each frame to storage before adding it to the job's bounded stream, and publish a frame only if
it is beyond the last one published. A reader therefore keeps the index of the next frame it owes the client:
entries below it are duplicates and skipped, and a gap (frames trimmed from the stream, or a reader starting
late) is filled from storage. The stream's end entry, written with the job's final state, ends the reading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import AsyncIterator

import anyio
import redis.asyncio as aioredis

from workers.jobs import JobState, Keys, Storage, StreamEntry

BLOCK_MS = 5000
BATCH = 100


@dataclass(frozen=True)
class FrameEvent:
    index: int
    data: str  # the frame record as JSON (vos.outputs.frame_record)


@dataclass(frozen=True)
class EndEvent:
    state: str
    error: str | None

    def json(self) -> str:
        return json.dumps({"state": self.state, "error": self.error})


async def job_events(client: aioredis.Redis, keys: Keys, storage: Storage, job_id: str,
                     after: int = -1) -> AsyncIterator[FrameEvent | EndEvent]:
    """Every frame with index > ``after`` in order, then one :class:`EndEvent`."""
    next_index = after + 1
    cursor = "0-0"
    while True:
        reply = await client.xread({keys.stream(job_id): cursor}, count=BATCH, block=BLOCK_MS)
        entries = reply[0][1] if reply else []
        if not entries:
            end = await _end_if_finished(client, keys, job_id, cursor)
            if end is not None:
                yield end
                return
            continue
        for entry_id, fields in entries:
            entry = StreamEntry.parse(entry_id, fields)
            cursor = entry.entry_id
            if entry.frame is None:
                yield EndEvent(entry.end_state or JobState.FAILED.value, entry.error)
                return
            if entry.frame < next_index:
                continue  # published again by a re-run, or already sent before a reconnect
            for index in range(next_index, entry.frame):
                stored = await _stored_frame(storage, job_id, index)
                if stored is None:  # files removed: the job was cancelled or deleted meanwhile
                    yield await _end_if_finished(client, keys, job_id, cursor) or EndEvent(JobState.CANCELLED.value, None)
                    return
                yield FrameEvent(index, stored)
            yield FrameEvent(entry.frame, entry.data or "{}")
            next_index = entry.frame + 1


async def _end_if_finished(client: aioredis.Redis, keys: Keys, job_id: str, cursor: str) -> EndEvent | None:
    """The end of a job whose end entry is not in the stream (a deleted job or stream); None while it runs."""
    state, error = await client.hmget(keys.job(job_id), ["state", "error"])
    if state is None:
        return EndEvent("deleted", "the job no longer exists")
    state = state.decode()
    if not JobState(state).terminal:
        return None
    # The end entry may have arrived since the blocking read gave up: then it is read next round.
    if await client.xread({keys.stream(job_id): cursor}, count=1):
        return None
    return EndEvent(state, error.decode() if error else None)


async def _stored_frame(storage: Storage, job_id: str, index: int) -> str | None:
    try:
        data = await anyio.to_thread.run_sync(storage.read_bytes, storage.frame_path(job_id, index))
    except FileNotFoundError:
        return None
    return data.decode()
