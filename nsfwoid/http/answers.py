"""HTTP answers: a score as text or JSON, and problem+json, as every route and the middleware render them."""

from __future__ import annotations

import json
import time
from http import HTTPStatus

import mimeparse
from aiohttp import web

from .. import metrics
from ..errors import (
    INSTANCE_PREFIX,
    PROBLEM_CONTENT_TYPE,
    MethodNotAllowed,
    NotFound,
    Problem,
    too_large,
)
from ..scoring.scored import Scored
from .intake import ImageBytes

# On a tie (no Accept, */*, equal qualities) the last one wins: text stays the default.
ANSWER_TYPES = ["application/json", "text/plain"]


def score_response(request: web.Request, scored: Scored, image: ImageBytes, started: float) -> web.Response:
    """POST / and /v1/score: the score as text, or as JSON (score_json) when Accept prefers it."""
    if not wants_json(request):
        return web.Response(text=scored.text + "\n")
    return json_response(score_json(scored, image, started))


def score_json(scored: Scored, image: ImageBytes, started: float) -> dict:
    """The JSON answer of POST /v1/score, and each prediction of the KServe :predict route. `started`: when the
    request (or the instance) began, for timings_ms.total."""
    timings = {"fetch": image.fetch_seconds, "preprocess": scored.preprocess_seconds,
               "inference": scored.inference_seconds, "total": time.perf_counter() - started}
    return {**scored.json, "source": image.source,
            "timings_ms": {k: round(v * 1000, 3) for k, v in timings.items() if v is not None}}


def wants_json(request: web.Request) -> bool:
    """Content negotiation, quality values included: JSON only when Accept prefers it to text."""
    accept = request.headers.get("Accept", "")
    try:
        return bool(accept) and mimeparse.best_match(ANSWER_TYPES, accept) == "application/json"
    except ValueError:  # an unreadable Accept header: the default answer
        return False


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
