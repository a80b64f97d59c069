"""Read a job's frames in order, exactly once, from its Redis stream with storage as the fallback.

Workers persist each frame to storage before adding it to the job's bounded stream, and publish a frame only if
it is beyond the last one published (or a later revision of one). A reader therefore keeps the index of the next
frame it owes the client: older entries are duplicates and skipped unless they are revisions, and a gap (frames
trimmed from the stream, or a reader starting late) is filled from storage. The stream's end entry, written with
the job's final state, ends the reading; a job whose record vanished ends with an error too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from workers.core.models import JobState
from workers.core.storage import Storage
from workers.core.store import AsyncJobStore

BLOCK_MS = 5000
BATCH = 100
VANISHED = "the job's record vanished from the job store (its data was lost); submit the job again"


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


async def job_events(store: AsyncJobStore, storage: Storage, job_id: str,
                     after: int = -1) -> AsyncIterator[FrameEvent | EndEvent]:
    """Every frame with index > ``after`` in order (and later revisions of sent ones), then one :class:`EndEvent`."""
    next_index = after + 1
    cursor = "0-0"
    while True:
        entries = await store.read_stream(job_id, cursor, BATCH, BLOCK_MS)
        if not entries:
            end = await _end_if_finished(store, job_id, cursor)
            if end is not None:
                yield end
                return
            continue
        for entry in entries:
            cursor = entry.entry_id
            if entry.frame is None:
                yield EndEvent(entry.end_state or JobState.FAILED.value, entry.error)
                return
            if entry.frame < next_index:
                if entry.revision > 0 and entry.frame > after:
                    yield FrameEvent(entry.frame, entry.data or "{}")  # a revision of a frame already sent
                continue  # published again by a re-run, or already sent before a reconnect
            for index in range(next_index, entry.frame):
                stored = await _stored_frame(storage, job_id, index)
                if stored is None:  # files removed: the job was cancelled or deleted meanwhile
                    yield await _end_if_finished(store, job_id, cursor) or EndEvent(JobState.CANCELLED.value, None)
                    return
                yield FrameEvent(index, stored)
            yield FrameEvent(entry.frame, entry.data or "{}")
            next_index = entry.frame + 1


async def _end_if_finished(store: AsyncJobStore, job_id: str, cursor: str) -> EndEvent | None:
    """The end of a job whose end entry is not in the stream (a vanished record or stream); None while it runs."""
    state, error = await store.end_state(job_id)
    if state is None:
        return EndEvent(JobState.FAILED.value, VANISHED)
    if not state.terminal:
        return None
    # The end entry may have arrived since the blocking read gave up: then it is read next round.
    if await store.read_stream(job_id, cursor, 1, None):
        return None
    return EndEvent(state.value, error)


async def _stored_frame(storage: Storage, job_id: str, index: int) -> str | None:
    try:
        data = await anyio.to_thread.run_sync(storage.read_bytes, storage.frame_path(job_id, index))
    except FileNotFoundError:
        return None
    return data.decode()
