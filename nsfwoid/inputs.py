"""Request → image bytes: form or multipart field `url`, multipart file `file`, or a raw image body."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .config import Settings
from .errors import MissingInput, PayloadTooLarge, UnsupportedMediaType
from .fetch import fetch

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
RAW_TYPES = ("application/octet-stream",)
# Room for multipart boundaries and headers around a file of the full allowed size.
MULTIPART_SLACK_BYTES = 64 * 1024


@dataclass(frozen=True)
class ImageBytes:
    data: bytes
    source: str  # "url", "file" or "body"
    fetch_seconds: float | None = None


def client_max_size(settings: Settings) -> int:
    return settings.max_image_bytes + MULTIPART_SLACK_BYTES


async def read_image(request: web.Request, session: aiohttp.ClientSession, settings: Settings) -> ImageBytes:
    cap = settings.max_image_bytes
    declared = request.content_length
    if declared is not None and declared > client_max_size(settings):
        raise PayloadTooLarge(f"declared length {declared} bytes is over the limit of {cap}")
    content_type = request.content_type
    if content_type in FORM_TYPES:
        try:
            form = await request.post()
        except (ValueError, AssertionError, LookupError, HttpProcessingError) as exc:  # malformed form or parts
            raise UnsupportedMediaType(f"cannot parse the {content_type} body: {exc}") from None
        upload = form.get("file")
        if isinstance(upload, web.FileField):
            return ImageBytes(_capped(upload.file.read(cap + 1), cap), "file")
        url = form.get("url")
        if isinstance(url, str) and url.strip():
            started = time.perf_counter()
            data = await fetch(session, url, settings)
            return ImageBytes(data, "url", time.perf_counter() - started)
        raise MissingInput("send a form field `url` or a multipart file `file`")
    if content_type.startswith("image/") or content_type in RAW_TYPES:
        data = _capped(await request.read(), cap)
        return ImageBytes(_require(data, "the request body is empty"), "body")
    raise UnsupportedMediaType(
        f"Content-Type {content_type} is not a form, multipart, image/* or application/octet-stream"
    )


def _capped(data: bytes, cap: int) -> bytes:
    if len(data) > cap:
        raise PayloadTooLarge(f"the image is over the limit of {cap} bytes")
    return data


def _require(data: bytes, why: str) -> bytes:
    if not data:
        raise MissingInput(why)
    return data
