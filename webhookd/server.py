"""The HTTP server: uvicorn as ``webhookd serve`` runs it, built in one place so tests run the same.

uvicorn times out a connection only between requests (its keep-alive timer, which stops at the
first byte of the next request). A client that sends half a request line, never finishes its
headers, or stalls in the middle of a body would hold its connection for ever, and a few hundred
such clients hold the server's file descriptors. :class:`DeadlineProtocol` gives every request a
deadline for its head and another for its body.

``limit_concurrency`` bounds the connections (and requests in progress) uvicorn holds, so a flood
is answered 503 at the door rather than growing memory without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from webhookd.config import Settings
from webhookd.exceptions import RequestTimeout
from webhookd.web import error_response


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the time to read each request bounded.

    The head (request line and headers) must arrive within ``head_timeout_s``: for a connection's
    first request counted from the connection, for later ones from their first byte (until then
    uvicorn's keep-alive timer runs). The body must then arrive within ``body_timeout_s``. A head
    that is late closes the connection; a late body is answered 408, unless the application has
    begun an answer already, and the connection closed.

    This leans on uvicorn's parser callbacks (``on_message_begin`` and the others), which are
    not a public interface: the tests that send stalled requests show when an upgrade breaks it.
    """

    head_timeout_s = 10.0
    body_timeout_s = 30.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect(self.head_timeout_s, self._head_late)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._expect(self.head_timeout_s, self._head_late)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._expect(self.body_timeout_s, self._body_late)

    def on_message_complete(self) -> None:
        self._stop_expecting()  # before uvicorn's, which returns early once an answer was sent
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_expecting()
        super().connection_lost(exc)

    def _expect(self, timeout_s: float, late: Callable[[], None]) -> None:
        self._stop_expecting()
        self._deadline = self.loop.call_later(timeout_s, late)

    def _stop_expecting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_late(self) -> None:
        self._deadline = None
        self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self.transport.write(_late_body_answer(self.body_timeout_s))
            cycle.response_started = True  # the application's own answer, if any, goes nowhere
        self.transport.close()


def _late_body_answer(timeout_s: float) -> bytes:
    error = RequestTimeout(
        f"the request body did not arrive within {timeout_s:g} s; send the whole body without pausing"
    )
    body = error_response(error).body
    head = (
        f"HTTP/1.1 {error.status} Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + bytes(body)


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` on ``settings``' address, with the request deadlines."""

    class Protocol(DeadlineProtocol):
        head_timeout_s = settings.request_head_timeout_s
        body_timeout_s = settings.request_body_timeout_s

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=Protocol,
        log_config=None,
        lifespan="on",
        server_header=False,
        proxy_headers=False,  # nothing here reads the client address or scheme
        access_log=False,
        limit_concurrency=settings.max_connections,
    )
