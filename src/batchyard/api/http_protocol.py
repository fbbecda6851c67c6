"""The HTTP/1.1 connection: uvicorn's h11 protocol plus deadlines for the request head and
body, and a size limit for the head.

uvicorn closes a connection idle after a response (`timeout_keep_alive`), caps a head that
arrives in pieces (`h11_max_incomplete_event_size`) and answers 503 beyond
`limit_concurrency`, but it never times out a connection that opens and sends nothing, or
sends its head a byte at a time: each would hold a socket for ever. Here a request head
must be complete within `header_timeout` seconds of the connection opening or of its first
byte. A head that arrives whole is not measured by h11 at all: `HeadSizeLimit` refuses it
at the ASGI layer. Nor does uvicorn time out a body that stops coming (a Content-Length
never met, a chunked body without its last chunk): the request would wait for ever. Here
the connection closes when `body_timeout` seconds pass without a byte of a body still
owed, as Azure's front end resets one (the request then ends as the client's, read_body
in bodies.py); a body this server has stopped reading, its buffer full, is not the
client's delay and is not timed."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadSizeLimit:
    """431 for a request whose target and headers together pass `max_bytes`, answered by
    `refuse` (in the shape of the request's plane) on a connection then closed."""

    def __init__(self, app: ASGIApp, max_bytes: int, refuse: Callable[[Scope, int], Response]):
        self.app = app
        self.max_bytes = max_bytes
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + \
                sum(len(name) + len(value) + 4 for name, value in scope["headers"])
            if size > self.max_bytes:
                response = self.refuse(scope, self.max_bytes)
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def protocol_with_timeouts(header_timeout: float, body_timeout: float) -> type[H11Protocol]:
    class TimedProtocol(H11Protocol):
        _head_deadline: asyncio.TimerHandle | None = None
        _body_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_deadline()
            self._disarm_body_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._in_request():
                self._arm_head_deadline()  # the first bytes of the next request
            super().data_received(data)

        def handle_events(self) -> None:
            super().handle_events()
            if self._in_request():
                self._disarm_head_deadline()
            self._disarm_body_deadline()  # each byte of a body restarts its clock
            # (a client waiting for "100 Continue" owes nothing until the application reads)
            if self._in_request() and self.cycle.more_body and not self.cycle.waiting_for_100_continue:
                self._body_deadline = self.loop.call_later(body_timeout, self._body_timed_out)

        def _in_request(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm_head_deadline(self) -> None:
            if self._head_deadline is None:
                self._head_deadline = self.loop.call_later(header_timeout, self._head_timed_out)

        def _disarm_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_timed_out(self) -> None:
            self._head_deadline = None
            if not self._in_request() and not self.transport.is_closing():
                self.transport.close()

        def _disarm_body_deadline(self) -> None:
            if self._body_deadline is not None:
                self._body_deadline.cancel()
                self._body_deadline = None

        def _body_timed_out(self) -> None:
            self._body_deadline = None
            if not self._in_request() or not self.cycle.more_body or self.transport.is_closing():
                return
            if self.flow.read_paused:  # the application is behind, not the client
                self._body_deadline = self.loop.call_later(body_timeout, self._body_timed_out)
                return
            self.transport.close()

    return TimedProtocol
