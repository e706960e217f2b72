"""The error taxonomy: each error a client can cause is a Problem, with a stable name, a status and a title.

Nothing here knows HTTP's machinery: decode workers raise these without importing aiohttp or prometheus-client.
nsfwoid/http/answers.py renders them as RFC 9457 problem+json.

Each problem is identified by its `type`, `urn:nsfwoid:problem:NAME`, in problem+json answers, in KServe's
per-instance errors and in `nsfwoid score`'s JSON lines alike: a stable name, not a link; docs/api.md
describes each.
"""

from __future__ import annotations

from typing import ClassVar

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:nsfwoid:problem:"
INSTANCE_PREFIX = "urn:nsfwoid:request:"


def problem_type(name: str) -> str:
    """The `type` of the problem called `name`."""
    return TYPE_PREFIX + name


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
        return problem_type(self.name)

    def to_dict(self, trace_id: str | None = None) -> dict:
        """RFC 9457 members; `instance` names the request, as its trace id appears in the logs."""
        body = {"type": self.type_uri, "title": self.title, "status": self.status, "detail": self.detail}
        if trace_id:
            body["instance"] = INSTANCE_PREFIX + trace_id
        return body

    # Seconds a client should wait before it tries again, sent as Retry-After; None: no such header.
    retry_after_s: ClassVar[int | None] = None

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}

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


class WorkerLost(Problem):
    """The decode worker serving this request was killed or stopped from outside (the OOM killer, an operator):
    nothing the image did. It has been replaced; the same request, sent again, is served."""

    name, status, title = "decode-worker-lost", 503, "The process decoding the image ended; retry"
    retry_after_s = 1


class ServiceFailed(Problem):
    """The service cannot score and will not recover by itself (the model failed to load or its self-test,
    decode workers cannot start): /healthz says `failed`, so that Kubernetes restarts the pod."""

    name, status, title = "service-failed", 503, "The service cannot score until it is restarted"


class UpstreamTimeout(Problem):
    name, status, title = "upstream-timeout", 504, "The image download timed out"


class InternalError(Problem):
    """Our own bug, never a client's doing: logged with its stack trace."""

    name, status, title = "internal-error", 500, "Internal error"


# What the service answers with; FILE_PROBLEMS only `nsfwoid score` reports.
ALL_PROBLEMS: tuple[type[Problem], ...] = tuple(p for p in Problem.__subclasses__() if p is not LocalFileProblem)
FILE_PROBLEMS: tuple[type[Problem], ...] = tuple(LocalFileProblem.__subclasses__())


def check_size(size: int, cap: int, what: str) -> None:
    """The one over-the-cap check: PayloadTooLarge, 413, when `what` (a body, a download, a file) has more
    than `cap` bytes."""
    if size > cap:
        raise too_large(what, cap)


def too_large(what: str, cap: int) -> PayloadTooLarge:
    """413 for an image over NSFWOID_MAX_IMAGE_BYTES, in the same words whichever check found it."""
    return PayloadTooLarge(f"{what} is over the limit of {cap} bytes (NSFWOID_MAX_IMAGE_BYTES)")
