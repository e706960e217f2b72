"""The error taxonomy. Every error a client can cause is a Problem, rendered as RFC 9457 problem+json."""

from __future__ import annotations

import json
from typing import ClassVar

from aiohttp import web

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://www.mediawiki.org/wiki/Nsfwoid/errors#"


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

    def to_dict(self) -> dict:
        return {"type": self.type_uri, "title": self.title, "status": self.status, "detail": self.detail}

    def headers(self) -> dict[str, str]:
        return {}


class MissingInput(Problem):
    name, status, title = "missing-input", 400, "No image given"


class InvalidUrl(Problem):
    name, status, title = "invalid-url", 400, "Not an absolute http(s) URL"


class UrlNotAllowed(Problem):
    name, status, title = "url-not-allowed", 403, "URL not allowed"


class UpstreamNotFound(Problem):
    name, status, title = "upstream-not-found", 404, "The image URL was not found"


class PayloadTooLarge(Problem):
    name, status, title = "payload-too-large", 413, "Image larger than the byte limit"


class ImageTooLarge(Problem):
    name, status, title = "image-too-large", 413, "Image larger than the pixel limit"


class UnsupportedMediaType(Problem):
    name, status, title = "unsupported-media-type", 415, "Not an image format nsfwoid reads"


class InvalidImage(Problem):
    name, status, title = "invalid-image", 422, "The image data cannot be decoded"


class UpstreamError(Problem):
    name, status, title = "upstream-error", 502, "The image could not be downloaded"


class Overloaded(Problem):
    name, status, title = "overloaded", 503, "Too busy, retry later"
    retry_after_s = 1

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class UpstreamTimeout(Problem):
    name, status, title = "upstream-timeout", 504, "The image download timed out"


ALL_PROBLEMS: tuple[type[Problem], ...] = tuple(Problem.__subclasses__())


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=problem.status,
        text=json.dumps(problem.to_dict()),
        content_type=PROBLEM_CONTENT_TYPE,
        headers={**problem.headers(), **(headers or {})},
    )


def http_problem_response(exc: web.HTTPException) -> web.Response:
    """aiohttp's own routing errors (404, 405, ...) in the same problem+json shape."""
    body = {"type": "about:blank", "title": exc.reason, "status": exc.status, "detail": exc.text or exc.reason}
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return web.Response(
        status=exc.status, text=json.dumps(body), content_type=PROBLEM_CONTENT_TYPE, headers=headers
    )
