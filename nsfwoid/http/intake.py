"""Intake: a request → image bytes, under admission. Reading the body (a form or multipart field `url`, a
multipart file `file`, a raw image, a KServe call's JSON), the size checks, the body and scoring slots, the bytes
held and the request's deadline all happen here, so that a route takes one step from its request to the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy
from prometheus_client import Gauge

from .. import metrics
from ..config import MiB, Settings
from ..errors import (
    InvalidRequest,
    MissingInput,
    Overloaded,
    Problem,
    RequestTimeout,
    ServiceFailed,
    UnsupportedMediaType,
    check_size,
)
from ..fetch.download import checked_url, fetch
from ..scoring.imaging import looks_like_image
from .state import RUNTIME, SCORING, SETTINGS, Runtime, Status

URLENCODED = "application/x-www-form-urlencoded"
KSERVE_PREDICT = "/v1/models/open_nsfw:predict"
FORM_TYPES = (URLENCODED, "multipart/form-data")
FORM_FIELDS = frozenset({"url", "file"})
RAW_TYPES = ("application/octet-stream",)
# Room for multipart boundaries and headers around a file of the full allowed size.
MULTIPART_SLACK_BYTES = 64 * 1024
# What reading a body raises when its framing is broken: aiohttp's C parser, or its pure-Python one.
BODY_ERRORS = (HttpProcessingError, web.RequestPayloadError)
# A KServe call holds its body, the parsed JSON with its base64 text, and the decoded images: about three times
# its size.
BODY_COPIES = 3


@dataclass(frozen=True)
class RequestInput:
    """What a request carried: the image bytes, or a URL still to fetch."""

    data: bytes | None
    url: str | None
    source: str  # "url", "file" or "body"


@dataclass(frozen=True)
class ImageBytes:
    """An image to score, admitted: its bytes, where they came from, and the request's scoring deadline."""

    data: bytes
    source: str  # "url", "file" or "body"
    deadline: float | None  # loop time
    fetch_seconds: float | None = None


def client_max_size(settings: Settings) -> int:
    return settings.max_image_bytes + MULTIPART_SLACK_BYTES


@dataclass
class Allowance:
    """How much of a bounded resource is taken: taken for a block and given back after it."""

    gauge: Gauge | None = None
    taken: int = 0


@dataclass
class Admission:
    """The slots and bytes requests take: scoring slots (NSFWOID_MAX_INFLIGHT), body slots
    (NSFWOID_MAX_RECEIVING), and the bytes of images held (NSFWOID_IMAGE_MEMORY)."""

    scoring_slots: Allowance = field(default_factory=lambda: Allowance(metrics.INFLIGHT))
    body_slots: Allowance = field(default_factory=Allowance)
    image_memory: Allowance = field(default_factory=lambda: Allowance(metrics.IMAGE_BYTES_HELD))

    @property
    def busy(self) -> bool:
        """Whether any request is being received or scored."""
        return bool(self.scoring_slots.taken or self.body_slots.taken)


ADMISSION = web.AppKey("admission", Admission)
INTAKE_CPU = metrics.STAGE_SECONDS["intake"]


@contextmanager
def _intake_cpu() -> Iterator[None]:
    """Count the CPU time the block spends on the event loop's thread as intake's; the block must not await.
    Intake's own (not metrics.stage_cpu): a call into another module would be a stop on the request's path. The
    slots' bookkeeping is not counted: a few microseconds, which two readings of the clock would double."""
    started = time.thread_time()
    try:
        yield
    finally:
        INTAKE_CPU.inc(time.thread_time() - started)


@asynccontextmanager
async def one_image(request: web.Request) -> AsyncIterator[ImageBytes]:
    """POST / and /v1/score: the image, for the block. The body is held against NSFWOID_IMAGE_MEMORY until the
    answer, received in a body slot, then scored in a scoring slot within the request's deadline; a URL's image
    is downloaded in that slot and held from its headers on."""
    settings = request.app[SETTINGS]
    with holding(request.app, held_size(request.content_length, settings), settings):
        async with receiving(request):
            given = await read_input(request, settings)
        async with admitted(request, 1) as deadline, image_of(given, request.app, deadline) as image:
            yield image


@asynccontextmanager
async def admitted(request: web.Request, count: int) -> AsyncIterator[float | None]:
    """`count` of the scoring slots (NSFWOID_MAX_INFLIGHT) for the block, or 503 at once; the block runs within
    the request's deadline (NSFWOID_REQUEST_TIMEOUT), which it is given as loop time (None: no deadline)."""
    settings, slots = request.app[SETTINGS], request.app[ADMISSION].scoring_slots
    _require_ready(request.app[RUNTIME])
    limit = settings.max_inflight
    with _taken(slots, count, limit, lambda: f"{slots.taken} of {limit} scoring slots are taken; {count} more do "
                                             "not fit"):
        deadline = asyncio.get_running_loop().time() + settings.request_timeout if settings.request_timeout else None
        try:
            async with asyncio.timeout_at(deadline):
                yield deadline
        except TimeoutError:
            raise Overloaded(f"not scored within the deadline of {settings.request_timeout:g} s") from None


@asynccontextmanager
async def image_of(given: RequestInput, app: web.Application, deadline: float | None) -> AsyncIterator[ImageBytes]:
    """The image bytes, for the block: those the request carried, or those its URL gives, held from the
    download's headers on."""
    if given.url is None:
        yield ImageBytes(given.data, given.source, deadline)
        return
    settings = app[SETTINGS]
    started = time.perf_counter()
    with ExitStack() as held:
        data = await fetch(app[RUNTIME].http, given.url, settings,
                           lambda declared: held.enter_context(holding(app, held_size(declared, settings), settings)))
        yield ImageBytes(data, "url", deadline, time.perf_counter() - started)


def held_size(declared_length: int | None, settings: Settings) -> int:
    """What a body, a request's or a download's, will hold in memory: its declared length, which the HTTP parser
    holds it to; NSFWOID_MAX_IMAGE_BYTES when it declares none (or is read decompressed)."""
    cap = settings.max_image_bytes
    return cap if declared_length is None else min(declared_length, cap)


def holding(app: web.Application, size: int, settings: Settings) -> AbstractContextManager[None]:
    """Count `size` bytes of images against NSFWOID_IMAGE_MEMORY for the block, or 503 at once."""
    memory = app[ADMISSION].image_memory
    return _taken(memory, size, settings.image_memory,
                  lambda: f"{memory.taken / MiB:.1f} MiB of images are held; {size / MiB:.1f} MiB more do not fit")


@asynccontextmanager
async def receiving(request: web.Request) -> AsyncIterator[None]:
    """Receive the body in a slot of its own, within NSFWOID_READ_TIMEOUT: a slow upload takes no scoring slot."""
    settings = request.app[SETTINGS]
    _require_ready(request.app[RUNTIME])
    limit = settings.max_receiving
    with _taken(request.app[ADMISSION].body_slots, 1, limit,
                lambda: f"{limit} request bodies are already being received"):
        try:
            async with asyncio.timeout(settings.read_timeout):
                yield
        except TimeoutError:
            raise RequestTimeout(f"the body did not arrive within {settings.read_timeout:g} s") from None


@contextmanager
def _taken(allowance: Allowance, amount: int, limit: int, refusal: Callable[[], str]) -> Iterator[None]:
    """Take `amount` of `limit` for the block, or refuse at once with 503 `overloaded`, saying `refusal()`."""
    if allowance.taken + amount > limit:
        raise Overloaded(refusal())
    allowance.taken += amount
    if allowance.gauge is not None:
        allowance.gauge.inc(amount)
    try:
        yield
    finally:
        allowance.taken -= amount
        if allowance.gauge is not None:
            allowance.gauge.dec(amount)


def _require_ready(runtime: Runtime) -> None:
    """503 at once while the service cannot score: `service-failed` for good, `overloaded` while it starts."""
    if runtime.status is Status.FAILED:
        raise ServiceFailed(f"{runtime.failure}; /healthz says failed until the service is restarted")
    if runtime.status not in SCORING:
        raise Overloaded("the model is not ready yet")


async def read_input(request: web.Request, settings: Settings) -> RequestInput:
    """Receive and parse the request body: form or multipart field `url`, multipart `file`, or raw bytes.

    Intake's own steps, before and after the body is received, are counted as its CPU time
    (nsfwoid_stage_cpu_seconds_total); aiohttp's receiving and parsing of the body is HTTP's."""
    with _intake_cpu():
        content_type = body_type(request)
    received = await receive(request, content_type)
    with _intake_cpu():
        return input_of(received, settings)


def body_type(request: web.Request) -> str:
    """The body's Content-Type, refused with 415 before a byte is read unless intake reads it."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Refused before a byte is read: a compressed body is a decompression bomb waiting to happen.
        raise UnsupportedMediaType(f"Content-Encoding {encoding} is not accepted: send the image uncompressed")
    content_type = request.content_type
    if content_type in FORM_TYPES or content_type.startswith("image/") or content_type in RAW_TYPES:
        return content_type
    pointer = f"; a KServe call goes to POST {KSERVE_PREDICT}" if content_type == "application/json" else ""
    raise UnsupportedMediaType(
        f"Content-Type {content_type} is not a form, multipart, image/* or application/octet-stream{pointer}"
    )


async def receive(request: web.Request, content_type: str) -> bytes | MultiDictProxy:
    """The body as aiohttp receives it: a form's fields, or the bytes of anything else."""
    if content_type not in FORM_TYPES or (content_type == URLENCODED and looks_like_image(await read_body(request))):
        # `curl --data-binary @photo.jpg` without -H sends an image as a form: score what was meant.
        return await read_body(request)
    try:
        return await request.post()
    except BODY_ERRORS as exc:
        raise unreadable(exc) from None
    # aiohttp's multipart reader raises RuntimeError for unknown part encodings and charsets.
    except (ValueError, AssertionError, LookupError, RuntimeError) as exc:
        raise UnsupportedMediaType(f"cannot parse the {content_type} body: {exc}") from None


def input_of(received: bytes | MultiDictProxy, settings: Settings) -> RequestInput:
    """What a received body asks to score: its bytes, a form's `file`, or a form's `url`."""
    if isinstance(received, bytes):
        if not received:
            raise MissingInput("the request body is empty")
        return RequestInput(capped(received, settings), None, "body")
    unknown = sorted(set(received) - FORM_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown form fields {', '.join(map(repr, unknown[:5]))}: send `url` or `file`")
    url = received.get("url")
    if url is not None and not (isinstance(url, str) and url.strip()):
        raise MissingInput("the form field `url` is empty")
    upload = received.get("file")
    if isinstance(upload, web.FileField):
        if url is not None:
            checked_url(url, settings.allowed_hosts)  # both given: the file is scored, the URL still vetted
        return RequestInput(capped(upload.file.read(settings.max_image_bytes + 1), settings), None, "file")
    if url is not None:
        return RequestInput(None, url, "url")
    raise MissingInput("send a form field `url` or a multipart file `file`")


def check_declared_length(request: web.Request, settings: Settings) -> None:
    """413 before reading, for a body that declares more than an image and a form's fields can take."""
    if request.content_length is not None:
        check_size(request.content_length - MULTIPART_SLACK_BYTES, settings.max_image_bytes, "the declared length")


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except BODY_ERRORS as exc:
        raise unreadable(exc) from None


def unreadable(exc: Exception) -> InvalidRequest:
    """Broken chunked framing, and the like: the parser's reason, without the bytes it quotes."""
    reason = (getattr(exc, "message", "") or str(exc)).splitlines()[0].rstrip(":")
    return InvalidRequest(f"the request body cannot be read: {reason}")


def check_head(request: web.Request, settings: Settings) -> None:
    """What the request's head decides before a byte of its body is read, in the middleware: 413 for a declared
    length over the cap; `Expect`, of which only `100-continue` is known."""
    check_declared_length(request, settings)
    expect = request.headers.get(hdrs.EXPECT)
    if expect is not None and expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {expect}")


async def expect_continue(request: web.Request) -> None:
    """aiohttp's expect handler, which runs before the middleware: `100 Continue` only for an expectation the
    request passes. Any other is answered by the middleware (check_head), before `100 Continue` and
    before a byte of the body, with a trace id, a log line and the metrics, as every answer is."""
    with contextlib.suppress(Problem, web.HTTPException):
        check_head(request, request.app[SETTINGS])
        await request.writer.write(b"HTTP/%d.%d 100 Continue\r\n\r\n" % request.version)


@asynccontextmanager
async def json_call(request: web.Request) -> AsyncIterator[bytes]:
    """A KServe call's body, received in a body slot, for the block; held against NSFWOID_IMAGE_MEMORY, at
    BODY_COPIES times its size (the body, the parsed JSON, the images), until the block ends."""
    settings = request.app[SETTINGS]
    size = min(BODY_COPIES * held_size(request.content_length, settings), settings.image_memory)
    with holding(request.app, size, settings):
        async with receiving(request):
            body = await read_body(request)
        yield body


def capped(data: bytes, settings: Settings) -> bytes:
    """The image bytes of a body, a file or an instance, refused with 413 over NSFWOID_MAX_IMAGE_BYTES."""
    check_size(len(data), settings.max_image_bytes, "the image")
    return data
