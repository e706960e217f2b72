"""The error taxonomy. Every error a client can cause is a Problem, rendered as RFC 9457 problem+json."""

from __future__ import annotations

import json
from typing import ClassVar

from aiohttp import web

from . import metrics

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://www.mediawiki.org/wiki/Nsfwoid/errors#"
INSTANCE_PREFIX = "urn:nsfwoid:request:"


def json_text(body: object) -> str:
    """JSON as every answer sends it: one line, ending with a newline, like the text answers."""
    return json.dumps(body) + "\n"


class Problem(Exception):
    """A failure with a stable name, an HTTP status and a human title."""

    name: ClassVar[str]
    status: ClassVar[int]
    title: ClassVar[str]

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def type_uri(self) -> str:
        return TYPE_BASE + self.name

    def to_dict(self, trace_id: str | None = None) -> dict:
        """RFC 9457 members; `instance` names the request, as its trace id appears in the logs."""
        body = {"type": self.type_uri, "title": self.title, "status": self.status, "detail": self.detail}
        if trace_id:
            body["instance"] = INSTANCE_PREFIX + trace_id
        return body

    def headers(self) -> dict[str, str]:
        return {}

    def reason_phrase(self) -> str | None:
        """The status line's reason phrase; None: the status's own."""
        return None


class MissingInput(Problem):
    name, status, title = "missing-input", 400, "No image given"


class InvalidRequest(Problem):
    name, status, title = "invalid-request", 400, "The request is not in a form this route takes"


class InvalidUrl(Problem):
    name, status, title = "invalid-url", 400, "Not an absolute http(s) URL"


class RequestTimeout(Problem):
    name, status, title = "request-timeout", 408, "The request body did not arrive in time"


class UrlNotAllowed(Problem):
    name, status, title = "url-not-allowed", 403, "URL not allowed"


class NotFound(Problem):
    name, status, title = "not-found", 404, "No such route"


class MethodNotAllowed(Problem):
    name, status, title = "method-not-allowed", 405, "Method not allowed on this route"

    def __init__(self, detail: str, allow: str) -> None:
        super().__init__(detail)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow}


class UpstreamNotFound(Problem):
    name, status, title = "upstream-not-found", 404, "The image URL was not found"


class LocalFileProblem(Problem):
    """`nsfwoid score`'s local files: problems of their own, never an HTTP answer (not in ALL_PROBLEMS)."""


class FileNotFound(LocalFileProblem):
    name, status, title = "file-not-found", 404, "No such local file"


class FileUnreadable(LocalFileProblem):
    name, status, title = "file-unreadable", 403, "The local file cannot be read"


class PayloadTooLarge(Problem):
    name, status, title = "payload-too-large", 413, "Image larger than the byte limit"


class ImageTooLarge(Problem):
    name, status, title = "image-too-large", 413, "Image too large to decode within the limits"


class UnsupportedMediaType(Problem):
    name, status, title = "unsupported-media-type", 415, "Not an image format nsfwoid reads"


class InvalidImage(Problem):
    name, status, title = "invalid-image", 422, "The image data cannot be decoded"


class UpstreamError(Problem):
    name, status, title = "upstream-error", 502, "The image could not be downloaded"


class UpstreamBusy(UpstreamError):
    """429 or 503 from the image host: `nsfwoid score` retries these, honouring Retry-After."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Overloaded(Problem):
    name, status, title = "overloaded", 503, "Too busy, retry later"
    retry_after_s = 1

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class UpstreamTimeout(Problem):
    name, status, title = "upstream-timeout", 504, "The image download timed out"


class InternalError(Problem):
    """Our own bug, never a client's doing: logged with its stack trace."""

    name, status, title = "internal-error", 500, "Internal error"


# What the service answers with; FILE_PROBLEMS only `nsfwoid score` reports.
ALL_PROBLEMS: tuple[type[Problem], ...] = tuple(p for p in Problem.__subclasses__() if p is not LocalFileProblem)
FILE_PROBLEMS: tuple[type[Problem], ...] = tuple(LocalFileProblem.__subclasses__())


def problem_response(problem: Problem, trace_id: str | None = None) -> web.Response:
    return web.Response(
        status=problem.status,
        reason=problem.reason_phrase(),
        text=json_text(problem.to_dict(trace_id)),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers(),
    )


def counted_problem_response(problem: Problem, trace_id: str) -> web.Response:
    """A request's answer with this problem, counted in nsfwoid_errors_total."""
    metrics.ERRORS.labels(problem.name).inc()
    return problem_response(problem, trace_id)


def problem_from_http(exc: web.HTTPException) -> Problem | None:
    """aiohttp's own errors (unknown route, wrong method, body too large) as our problems."""
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such route; see /openapi.yaml")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"allowed here: {exc.headers.get('Allow', '')}", exc.headers.get("Allow", ""))
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge(exc.text or "request body too large")
    return None


def http_problem_response(exc: web.HTTPException, trace_id: str | None = None) -> web.Response:
    """Any other HTTP error in the same problem+json shape; `about:blank` means the status says it all."""
    body = {"type": "about:blank", "title": exc.reason, "status": exc.status, "detail": exc.text or exc.reason}
    if trace_id:
        body["instance"] = INSTANCE_PREFIX + trace_id
    return web.Response(status=exc.status, text=json_text(body), content_type=PROBLEM_CONTENT_TYPE)
