"""Admission control, and the app's typed state: the service's status, the bounded slots and bytes a request
must take before it is received or scored, and the request's deadline."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import Gauge

from . import metrics
from .config import MiB, Settings
from .errors import Overloaded, RequestTimeout, ServiceFailed
from .model import Model
from .scoring import Scorer


class Status(enum.Enum):
    """The service's one status, as /healthz reports it: starting → ok or failed; ok → draining on SIGTERM."""

    STARTING = "starting"
    OK = "ok"
    FAILED = "failed"
    DRAINING = "draining"

    @property
    def scores(self) -> bool:
        """Whether scoring requests are taken: while draining, those already sent still are."""
        return self in (Status.OK, Status.DRAINING)


@dataclass
class Allowance:
    """How much of a bounded resource is taken: taken for a block and given back after it."""

    gauge: Gauge | None = None
    taken: int = 0

    @contextmanager
    def take(self, amount: int, limit: int, refusal: Callable[[], str]) -> Iterator[None]:
        """Take `amount` of `limit` for the block, or refuse at once with 503 `overloaded`, saying `refusal()`."""
        if self.taken + amount > limit:
            raise Overloaded(refusal())
        self.taken += amount
        if self.gauge is not None:
            self.gauge.inc(amount)
        try:
            yield
        finally:
            self.taken -= amount
            if self.gauge is not None:
                self.gauge.dec(amount)


@dataclass
class Runtime:
    """What exists only while the app runs; starts empty and is filled by the startup task."""

    model: Model | None = None
    scorer: Scorer | None = None
    http: aiohttp.ClientSession | None = None
    status: Status = Status.STARTING
    failure: str | None = None  # why the start failed
    selftest_score: float | None = None
    scoring_slots: Allowance = field(default_factory=lambda: Allowance(metrics.INFLIGHT))
    body_slots: Allowance = field(default_factory=Allowance)
    image_memory: Allowance = field(default_factory=lambda: Allowance(metrics.IMAGE_BYTES_HELD))

    def fail(self, reason: str) -> None:
        """The service cannot score, and will not recover until it is restarted: /healthz says why."""
        self.failure = reason
        self.status = Status.FAILED

    @property
    def busy(self) -> bool:
        """Whether any request is being received or scored."""
        return bool(self.scoring_slots.taken or self.body_slots.taken)

    def receiving_body(self, limit: int) -> AbstractContextManager[None]:
        """One of `limit` slots for a body still arriving, apart from the scoring slots, or 503 at once."""
        self._require_ready()
        return self.body_slots.take(1, limit, lambda: f"{limit} request bodies are already being received")

    def admitted(self, count: int, limit: int) -> AbstractContextManager[None]:
        """Take `count` of the `limit` scoring slots for the block, or refuse at once with 503."""
        self._require_ready()
        return self.scoring_slots.take(count, limit, lambda: f"{self.scoring_slots.taken} of {limit} scoring slots "
                                                             f"are taken; {count} more do not fit")

    def holding(self, size: int, limit: int) -> AbstractContextManager[None]:
        """Count `size` bytes of images against `limit` (NSFWOID_IMAGE_MEMORY) for the block, or 503 at once."""
        return self.image_memory.take(size, limit, lambda: f"{self.image_memory.taken / MiB:.1f} MiB of images "
                                                           f"are held; {size / MiB:.1f} MiB more do not fit")

    @contextmanager
    def holding_later(self, limit: int) -> Iterator[Callable[[int], None]]:
        """A `hold(size)` that counts size bytes as `holding` does, from when it is called to the end of the block:
        for a download, whose size is known only once its headers have come."""
        with ExitStack() as held:
            yield lambda size: held.enter_context(self.holding(size, limit))

    def _require_ready(self) -> None:
        if self.status is Status.FAILED:
            raise ServiceFailed(f"{self.failure}; /healthz says failed until the service is restarted")
        if not self.status.scores:
            raise Overloaded("the model is not ready yet")


SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)


@asynccontextmanager
async def receiving(request: web.Request) -> AsyncIterator[None]:
    """Receive the body in a slot of its own, within NSFWOID_READ_TIMEOUT: a slow upload takes no scoring slot."""
    settings, runtime = request.app[SETTINGS], request.app[RUNTIME]
    with runtime.receiving_body(settings.max_receiving):
        try:
            async with asyncio.timeout(settings.read_timeout):
                yield
        except TimeoutError:
            raise RequestTimeout(f"the body did not arrive within {settings.read_timeout:g} s") from None


@asynccontextmanager
async def request_deadline(settings: Settings) -> AsyncIterator[float | None]:
    """The scoring deadline (loop time, or None) for the block; passing it answers 503."""
    deadline = asyncio.get_running_loop().time() + settings.request_timeout if settings.request_timeout else None
    try:
        async with asyncio.timeout_at(deadline):
            yield deadline
    except TimeoutError:
        raise Overloaded(f"not scored within the deadline of {settings.request_timeout:g} s") from None
