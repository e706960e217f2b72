"""HTTP answers: JSON and problem+json, as every route and the middleware render them."""

from __future__ import annotations

import json
from http import HTTPStatus

from aiohttp import web

from . import metrics
from .errors import (
    INSTANCE_PREFIX,
    PROBLEM_CONTENT_TYPE,
    MethodNotAllowed,
    NotFound,
    Problem,
    too_large,
)


def json_text(body: object) -> str:
    """JSON as every answer sends it: one line, ending with a newline, like the text answers."""
    return json.dumps(body) + "\n"


def json_response(body: dict, status: int = 200) -> web.Response:
    return web.Response(text=json_text(body), status=status, content_type="application/json")


def problem_response(problem: Problem, trace_id: str | None = None) -> web.Response:
    return web.Response(
        status=problem.status,
        reason=problem.reason_phrase(),
        text=json_text(problem.to_dict(trace_id)),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers(),
    )


def problem_bytes(problem: Problem, trace_id: str) -> bytes:
    """A whole HTTP/1.1 answer with this problem, closing the connection: for a connection refused or cut before
    aiohttp has a request to answer (too many connections, a head that did not arrive in time)."""
    body = json_text(problem.to_dict(trace_id)).encode()
    head = [f"HTTP/1.1 {problem.status} {HTTPStatus(problem.status).phrase}",
            f"Content-Type: {PROBLEM_CONTENT_TYPE}", f"Content-Length: {len(body)}", "Connection: close",
            *(f"{name}: {value}" for name, value in problem.headers().items()), "", ""]
    return "\r\n".join(head).encode() + body


def counted_problem_response(problem: Problem, trace_id: str) -> web.Response:
    """A request's answer with this problem, counted in nsfwoid_errors_total."""
    metrics.ERRORS.labels(problem.name).inc()
    return problem_response(problem, trace_id)


def problem_from_http(exc: web.HTTPException, max_image_bytes: int) -> Problem | None:
    """aiohttp's own errors (unknown route, wrong method, body too large) as our problems."""
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such route; see /openapi.yaml")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"allowed here: {exc.headers.get('Allow', '')}", exc.headers.get("Allow", ""))
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return too_large("the body", max_image_bytes)
    return None


def http_problem_response(exc: web.HTTPException, trace_id: str | None = None) -> web.Response:
    """Any other HTTP error in the same problem+json shape; `about:blank` means the status says it all."""
    body = {"type": "about:blank", "title": exc.reason, "status": exc.status, "detail": exc.text or exc.reason}
    if trace_id:
        body["instance"] = INSTANCE_PREFIX + trace_id
    return web.Response(status=exc.status, text=json_text(body), content_type=PROBLEM_CONTENT_TYPE)
