"""ASGI middleware guarding /v1 before any handler runs: the API key, the body size and the body read timeout.

They run before FastAPI parses a body, so a request without a valid key is refused before its body is read, a
declared Content-Length over the limit is refused at once, and a client that stalls while sending a body is cut
off after ``http_body_timeout_s`` (or once it trickles in slower than ``http_min_body_bytes_per_s``) instead of
holding a connection for ever.
"""

from __future__ import annotations

import json
import secrets
import time

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.core.settings import ServiceSettings

PROTECTED_PREFIX = "/v1/"
API_KEY_HEADER = "X-API-Key"


class GuardMiddleware:
    def __init__(self, app: ASGIApp, settings: ServiceSettings, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = settings.api_key.encode() if settings.api_key else None
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = settings.http_body_timeout_s
        self.min_rate = settings.http_min_body_bytes_per_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value for name, value in scope["headers"]}
        if self.api_key is not None:
            given = headers.get(API_KEY_HEADER.lower(), b"")
            if not secrets.compare_digest(given, self.api_key):
                await _reply(send, 401, f"missing or wrong API key: send it in the {API_KEY_HEADER} header")
                return
        declared = headers.get("content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await _reply(send, 413, self._too_large(int(declared)))
            return
        await _GuardedRequest(self, scope, receive, send).run()

    def _too_large(self, size: int | None = None) -> str:
        told = f" ({size} bytes)" if size is not None else ""
        return f"the request body{told} is larger than the limit of {self.max_body_bytes} bytes"


class _GuardedRequest:
    """One request whose body reads are counted and timed; a violation replaces the app's response."""

    def __init__(self, guard: GuardMiddleware, scope: Scope, receive: Receive, send: Send) -> None:
        self.guard, self.scope, self._receive, self._send = guard, scope, receive, send
        self.received = 0
        self.started_at = time.monotonic()
        self.body_complete = False  # afterwards receive() only waits for a disconnect: no timeout applies
        self.refusal: tuple[int, str] | None = None
        self.started = False

    async def run(self) -> None:
        try:
            await self.guard.app(self.scope, self.receive, self.send)
        except _BodyRefused:
            pass  # the app did not turn the refusal into a response: send it below
        if self.refusal is not None and not self.started:
            await _reply(self._send, *self.refusal, close=True)

    async def receive(self) -> Message:
        if self.refusal is not None:
            raise _BodyRefused()
        if self.body_complete:
            return await self._receive()
        with anyio.move_on_after(self.guard.body_timeout_s) as scope:
            message = await self._receive()
        if scope.cancelled_caught:
            self.refusal = (408, f"the request body stalled: no data for {self.guard.body_timeout_s:g} s")
            raise _BodyRefused()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.body_complete = not message.get("more_body", False)
            if self.received > self.guard.max_body_bytes:
                self.refusal = (413, self.guard._too_large())
                raise _BodyRefused()
            self._check_rate()
        return message

    def _check_rate(self) -> None:
        """A body trickling in (a byte now and then) is cut off once the grace period is over."""
        elapsed = time.monotonic() - self.started_at
        if not self.body_complete and elapsed > self.guard.body_timeout_s and \
                self.received < self.guard.min_rate * elapsed:
            self.refusal = (408, f"the request body arrives too slowly ({self.received / elapsed:.0f} bytes/s; "
                                 f"at least {self.guard.min_rate} bytes/s are needed)")
            raise _BodyRefused()

    async def send(self, message: Message) -> None:
        if self.refusal is not None:
            return  # the app's own error for the interrupted body (e.g. "error parsing the body") is replaced
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class _BodyRefused(Exception):
    """Raised into the app when its request body broke a limit; the guard answers instead of the app."""


async def _reply(send: Send, status: int, detail: str, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def idle_closing_protocol(header_timeout_s: float) -> type:
    """uvicorn's HTTP protocol (httptools when installed, else h11) that also closes connections stuck before a
    request reaches the app: one that sends nothing is closed after the keep-alive timeout (as an idle keep-alive
    connection is), and one that sends part of a request head and stalls is closed after ``header_timeout_s``.
    Otherwise such clients hold one of the server's connection slots for ever."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class IdleClosingProtocol(Base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: object) -> None:
            super().connection_made(transport)
            # Cancelled by the first bytes received, as after a response (uvicorn's own keep-alive handling).
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)
            self.head_timer: object = None

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.head_timer is None and not self.transport.is_closing():
                self.head_timer = self.loop.call_later(header_timeout_s, self._head_overdue, self.cycle)

        def _head_overdue(self, cycle: object) -> None:
            self.head_timer = None
            if self.cycle is cycle and (cycle is None or cycle.response_complete):
                self.transport.close()  # no new request began since the bytes came: a head that never completed

    return IdleClosingProtocol
