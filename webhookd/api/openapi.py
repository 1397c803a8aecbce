"""OpenAPI 3.1, generated from the routes: each handler declares its operation with ``@operation``."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.routing import BaseRoute, Route

from webhookd import __version__
from webhookd.api.pagination import DEFAULT_PAGE_SIZE, MAX_OFFSET, MAX_PAGE, MAX_PAGE_SIZE
from webhookd.api.schemas import SCHEMAS, Schema
from webhookd.inputs import CUSTOMER_ID_PATTERN
from webhookd.models import CALL_REF_PATTERN, Carrier, Scope, id_pattern

F = TypeVar("F", bound=Callable[..., Any])
_PATH_PARAM = re.compile(r"{(\w+)}")
ID_PREFIXES = {
    "subscription_id": "sub",
    "event_id": "evt",
    "delivery_id": "dlv",
    "source_id": "src",
    "key_id": "key",
}
"""The kind of id each path parameter holds: any other string answers 404 without a lookup."""
PATH_SCHEMAS: dict[str, Schema] = {
    "carrier": {"type": "string", "enum": [c.value for c in Carrier]},
    "call_ref": {"type": "string", "pattern": CALL_REF_PATTERN},
    "customer_id": {"type": "string", "pattern": CUSTOMER_ID_PATTERN},
}
"""Path parameters that are not ids (a call reference that does not match answers 400)."""

QueryParam = tuple[str, Schema, str]


def page_params(cursor_pattern: str) -> tuple[QueryParam, ...]:
    """``limit``, ``page`` and a ``cursor`` of ``cursor_pattern`` (the list's kind of cursor)."""
    return (
        (
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE},
            "page size",
        ),
        ("cursor", {"type": "string", "pattern": cursor_pattern}, "next_cursor of the previous page"),
        (
            "page",
            {"type": "integer", "minimum": 0, "maximum": MAX_PAGE},
            f"offset alias (skips page * limit rows, at most {MAX_OFFSET}); cursor wins",
        ),
    )


_ERRORS = {
    400: "bad input",
    401: "missing or bad API key",
    403: "the key lacks the scope",
    404: "not found (or another customer's)",
    409: "conflicts with the current state",
    413: "body too large",
    429: "rate limited; see Retry-After",
    503: "the database is unavailable or overloaded for now; retry later",
}


@dataclass(frozen=True, slots=True)
class Operation:
    """How a handler appears in the OpenAPI document."""

    summary: str
    responses: dict[int, str | None]
    """Status to schema name (``None``: no body). Error statuses get the Error schema."""
    scope: Scope | None = None
    authenticated: bool = True
    body: str | None = None
    body_required: bool = True
    """``False``: the body may be left out altogether."""
    query: Sequence[QueryParam] = field(default_factory=tuple)
    required_query: frozenset[str] = frozenset()
    """The query parameters (of ``query``) that must be given."""
    tag: str = "webhooks"
    description: str | None = None
    probe: QueryParam | None = None
    """A query parameter with which the operation needs neither a key nor a body (``x-probe``)."""
    media_types: Sequence[str] = ("application/json",)
    """What the body may be sent as."""
    traced: bool = False
    """Takes a W3C ``traceparent`` header, the parent of the request's spans (the otel extra)."""


TRACEPARENT_PARAM: Schema = {
    "name": "traceparent",
    "in": "header",
    "required": False,
    # No pattern: W3C trace context says a malformed value is ignored, not refused.
    "schema": {"type": "string"},
    "description": "W3C trace context (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`): with the"
    " otel extra installed, the parent of this request's spans, and through them of the deliveries'"
    " traceparent headers. A malformed value is ignored.",
}


def operation(**kwargs: Any) -> Callable[[F], F]:
    """Attach an :class:`Operation` to a handler."""

    def attach(handler: F) -> F:
        handler.__openapi__ = Operation(**kwargs)  # type: ignore[attr-defined]
        return handler

    return attach


def _response(status: int, schema: str | None) -> Schema:
    if status in _ERRORS:
        schema = schema or "Error"
    described: Schema = {"description": _ERRORS.get(status, "success")}
    if schema is not None:
        described["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    return described


def _path_schema(name: str) -> Schema:
    return PATH_SCHEMAS.get(name) or {"type": "string", "pattern": id_pattern(ID_PREFIXES[name])}


def _operation(path: str, method: str, op: Operation) -> Schema:
    params = [
        {"name": n, "in": "path", "required": True, "schema": _path_schema(n)}
        for n in _PATH_PARAM.findall(path)
    ]
    params += [
        {"name": n, "in": "query", "required": n in op.required_query, "schema": s, "description": d}
        for n, s, d in op.query
    ]
    if op.traced:
        params.append(TRACEPARENT_PARAM)
    statuses = dict(op.responses)
    if op.authenticated:
        statuses |= {401: None, 429: None} | ({403: None} if op.scope else {})
    if op.body is not None:
        statuses |= {400: None, 413: None}
    if op.query:
        statuses |= {400: None}
    body: Schema = {
        "summary": op.summary,
        "operationId": f"{method}_{path}".replace("/", "_").replace("{", "").replace("}", ""),
        "tags": [op.tag],
        "parameters": params,
        "responses": {str(s): _response(s, n) for s, n in sorted(statuses.items())},
    }
    described = [f"Scope: `{op.scope.value}`." if op.scope else None, op.description]
    if any(described):
        body["description"] = " ".join(d for d in described if d)
    body["security"] = [{"bearer": []}] if op.authenticated else []
    if op.body is not None:
        schema = {"$ref": f"#/components/schemas/{op.body}"}
        body["requestBody"] = {
            "required": op.body_required,
            "content": {media: {"schema": schema} for media in op.media_types},
        }
    if op.probe is not None:
        # OpenAPI cannot make a key and a body required unless a query parameter is given: listed as
        # a parameter, the probe would make both look optional to every client generated from this.
        name, schema, about = op.probe
        body["x-probe"] = {"parameter": name, "schema": schema, "description": about, "security": []}
    return body


def build_openapi(routes: Sequence[BaseRoute]) -> Schema:
    """The OpenAPI 3.1 document of every route whose handler declares an operation."""
    paths: dict[str, Schema] = {}
    for route in routes:
        op: Operation | None = getattr(getattr(route, "endpoint", None), "__openapi__", None)
        if not isinstance(route, Route) or op is None:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(route.path, method.lower(), op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "webhookd",
            "version": __version__,
            "description": "Durable, signed webhook delivery for voice-AI call events.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
