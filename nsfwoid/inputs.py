"""Request → image bytes: form or multipart field `url`, multipart file `file`, or a raw image body."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from .admission import SETTINGS
from .config import Settings
from .errors import InvalidRequest, MissingInput, Problem, UnsupportedMediaType, check_size, too_large
from .fetch import checked_url, fetch, held_size
from .imaging import looks_like_image

URLENCODED = "application/x-www-form-urlencoded"
KSERVE_PREDICT = "/v1/models/open_nsfw:predict"
FORM_TYPES = (URLENCODED, "multipart/form-data")
FORM_FIELDS = frozenset({"url", "file"})
RAW_TYPES = ("application/octet-stream",)
# Room for multipart boundaries and headers around a file of the full allowed size.
MULTIPART_SLACK_BYTES = 64 * 1024
# What reading a body raises when its framing is broken: aiohttp's C parser, or its pure-Python one.
BODY_ERRORS = (HttpProcessingError, web.RequestPayloadError)


@dataclass(frozen=True)
class RequestInput:
    """What a request carried: the image bytes, or a URL still to fetch."""

    data: bytes | None
    url: str | None
    source: str  # "url", "file" or "body"


@dataclass(frozen=True)
class ImageBytes:
    data: bytes
    source: str  # "url", "file" or "body"
    fetch_seconds: float | None = None


def client_max_size(settings: Settings) -> int:
    return settings.max_image_bytes + MULTIPART_SLACK_BYTES


async def image_of(given: RequestInput, session: aiohttp.ClientSession, settings: Settings,
                   hold: Callable[[int], None]) -> ImageBytes:
    """The image bytes: those the request carried, or those its URL gives. `hold`: see fetch."""
    if given.url is None:
        return ImageBytes(given.data, given.source)
    started = time.perf_counter()
    data = await fetch(session, given.url, settings, hold)
    return ImageBytes(data, "url", time.perf_counter() - started)


async def read_input(request: web.Request, settings: Settings) -> RequestInput:
    """Receive and parse the request body: form or multipart field `url`, multipart `file`, or raw bytes."""
    cap = settings.max_image_bytes
    check_declared_length(request, settings)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Refused before a byte is read: a compressed body is a decompression bomb waiting to happen.
        raise UnsupportedMediaType(f"Content-Encoding {encoding} is not accepted: send the image uncompressed")
    content_type = request.content_type
    if content_type == URLENCODED and looks_like_image(await read_body(request)):
        # `curl --data-binary @photo.jpg` without -H sends an image as a form: score what was meant.
        return RequestInput(_capped(await read_body(request), cap), None, "body")
    if content_type in FORM_TYPES:
        try:
            form = await request.post()
        except BODY_ERRORS as exc:
            raise unreadable(exc) from None
        # aiohttp's multipart reader raises RuntimeError for unknown part encodings and charsets.
        except (ValueError, AssertionError, LookupError, RuntimeError) as exc:
            raise UnsupportedMediaType(f"cannot parse the {content_type} body: {exc}") from None
        unknown = sorted(set(form) - FORM_FIELDS)
        if unknown:
            raise InvalidRequest(f"unknown form fields {', '.join(map(repr, unknown[:5]))}: send `url` or `file`")
        url = form.get("url")
        if url is not None and not (isinstance(url, str) and url.strip()):
            raise MissingInput("the form field `url` is empty")
        upload = form.get("file")
        if isinstance(upload, web.FileField):
            if url is not None:
                checked_url(url, settings.allowed_hosts)  # both given: the file is scored, the URL still vetted
            return RequestInput(_capped(upload.file.read(cap + 1), cap), None, "file")
        if url is not None:
            return RequestInput(None, url, "url")
        raise MissingInput("send a form field `url` or a multipart file `file`")
    if content_type.startswith("image/") or content_type in RAW_TYPES:
        data = _capped(await read_body(request), cap)
        return RequestInput(_require(data, "the request body is empty"), None, "body")
    pointer = f"; a KServe call goes to POST {KSERVE_PREDICT}" if content_type == "application/json" else ""
    raise UnsupportedMediaType(
        f"Content-Type {content_type} is not a form, multipart, image/* or application/octet-stream{pointer}"
    )


def body_bytes(request: web.Request, settings: Settings) -> int:
    """What a request body will hold in memory (a request Content-Encoding is refused, so it is read as sent)."""
    return held_size(request.content_length, settings.max_image_bytes)


def check_declared_length(request: web.Request, settings: Settings) -> None:
    """413 before reading, for a body that declares more than an image and a form's fields can take."""
    if request.content_length is not None and request.content_length > client_max_size(settings):
        raise too_large("the declared length", settings.max_image_bytes)


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except BODY_ERRORS as exc:
        raise unreadable(exc) from None


def unreadable(exc: Exception) -> InvalidRequest:
    """Broken chunked framing, and the like: the parser's reason, without the bytes it quotes."""
    reason = (getattr(exc, "message", "") or str(exc)).splitlines()[0].rstrip(":")
    return InvalidRequest(f"the request body cannot be read: {reason}")


def check_expectation(request: web.Request, settings: Settings) -> None:
    """`Expect`: only `100-continue` is known, and only for a declared length within the cap."""
    expect = request.headers.get(hdrs.EXPECT)
    if expect is None:
        return
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {expect}")
    check_declared_length(request, settings)


async def expect_continue(request: web.Request) -> None:
    """aiohttp's expect handler, which runs before the middleware: `100 Continue` only for an expectation the
    request passes. Any other is answered by the middleware (check_expectation), before `100 Continue` and
    before a byte of the body, with a trace id, a log line and the metrics, as every answer is."""
    with contextlib.suppress(Problem, web.HTTPException):
        check_expectation(request, request.app[SETTINGS])
        await request.writer.write(b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)


def _capped(data: bytes, cap: int) -> bytes:
    check_size(len(data), cap, "the image")
    return data


def _require(data: bytes, why: str) -> bytes:
    if not data:
        raise MissingInput(why)
    return data
