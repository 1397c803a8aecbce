"""``HotRoute`` (one route served ahead of Starlette's router, inside a real Starlette app, driven
through its ASGI interface; the integration tests drive the real server's publish route) and
``read_body`` on bodies that arrive in parts."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from webhookd.exceptions import ApiError, PayloadTooLarge, RequestError
from webhookd.web import HotRoute, error_response, read_body

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def hot(request: Request) -> Response:
    body = await request.body()
    if body == b"refuse":
        raise ApiError("no thanks", status=409, code="conflict", headers={"Retry-After": "3"})
    if body == b"crash":
        raise RuntimeError("boom")
    return PlainTextResponse(b"hot:" + body, status_code=202)


async def routed(request: Request) -> Response:
    return PlainTextResponse(f"router:{request.method}:{request.url.path}")


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc)


async def _crashed(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("server error", status_code=500)


def build() -> Starlette:
    return Starlette(
        routes=[
            Route("/events", routed, methods=["POST", "GET"]),
            Route("/events/", routed, methods=["POST"]),
            Route("/other", routed, methods=["POST"]),
        ],
        middleware=[Middleware(HotRoute, method="POST", path="/events", endpoint=hot)],
        exception_handlers={RequestError: _refused, Exception: _crashed},
    )


Answer = tuple[int, dict[str, str], bytes]


async def drive(
    app: Starlette, method: str, path: str, body: bytes, sent: list[dict[str, Any]], root_path: str = ""
) -> None:
    """One HTTP request through ``app``; what it sends is appended to ``sent``."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return incoming.pop() if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)


def answer(sent: list[dict[str, Any]]) -> Answer:
    start, *bodies = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in bodies)


async def call(app: Starlette, method: str, path: str, body: bytes = b"") -> Answer:
    sent: list[dict[str, Any]] = []
    await drive(app, method, path, body, sent)
    return answer(sent)


async def test_the_route_is_served_ahead_of_the_router() -> None:
    assert await call(build(), "POST", "/events", b"x") == (
        202,
        {"content-length": "5", "content-type": "text/plain; charset=utf-8"},
        b"hot:x",
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/events"), ("POST", "/events/"), ("POST", "/other")],
)
async def test_other_methods_and_paths_go_to_the_router(method: str, path: str) -> None:
    status, _, body = await call(build(), method, path, b"x")
    assert status == 200
    assert body == f"router:{method}:{path}".encode()


async def test_under_a_root_path_the_router_decides() -> None:
    """With ``root_path`` set the router matches the path without it; the hot route steps aside
    rather than match a path the router would not (``/events`` under root ``/events`` is ``/``)."""
    sent: list[dict[str, Any]] = []
    await drive(build(), "POST", "/events", b"x", sent, root_path="/events")
    assert answer(sent)[0] == 404
    sent.clear()
    await drive(build(), "POST", "/api/events", b"x", sent, root_path="/api")
    assert answer(sent)[0::2] == (200, b"router:POST:/api/events")


async def test_a_method_neither_serves_is_the_router_s_405() -> None:
    status, headers, _ = await call(build(), "PUT", "/events")
    assert status == 405
    assert set(headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


async def test_a_refusal_is_answered_as_the_exception_middleware_would() -> None:
    status, headers, body = await call(build(), "POST", "/events", b"refuse")
    assert status == 409
    assert headers["retry-after"] == "3"
    assert orjson.loads(body) == {"error": {"code": "conflict", "message": "no thanks"}}


async def test_any_other_error_reaches_the_server_error_handler() -> None:
    sent: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError, match="boom"):  # Starlette re-raises once it has answered
        await drive(build(), "POST", "/events", b"crash", sent)
    assert answer(sent)[0::2] == (500, b"server error")


async def test_lifespan_passes_through() -> None:
    app = build()
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def request_with(messages: list[dict[str, Any]], headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or []}
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    return Request(scope, receive)


def part(body: bytes, more: bool) -> dict[str, Any]:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_read_body_joins_a_body_sent_in_parts() -> None:
    request = request_with([part(b"ab", True), part(b"", True), part(b"cd", False)])
    assert await read_body(request, limit=4) == b"abcd"


async def test_read_body_of_one_message_and_of_none() -> None:
    assert await read_body(request_with([part(b"whole", False)]), limit=5) == b"whole"
    assert await read_body(request_with([{"type": "http.request"}]), limit=5) == b""


async def test_read_body_refuses_a_body_that_grows_past_the_limit() -> None:
    request = request_with([part(b"abc", True), part(b"de", True), part(b"never read", False)])
    with pytest.raises(PayloadTooLarge, match="over the limit of 4 bytes"):
        await read_body(request, limit=4)


async def test_read_body_refuses_a_declared_length_past_the_limit_before_reading() -> None:
    request = request_with([], headers=[(b"content-length", b"5")])  # receive() would fail
    with pytest.raises(PayloadTooLarge, match="the body is 5 bytes; the limit is 4"):
        await read_body(request, limit=4)


async def test_read_body_raises_when_the_client_goes_away() -> None:
    request = request_with([part(b"ab", True), {"type": "http.disconnect"}])
    with pytest.raises(ClientDisconnect):
        await read_body(request, limit=10)
