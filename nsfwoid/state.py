"""Typed application state: the settings and what exists only while the app runs."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from . import metrics
from .config import Settings
from .errors import Overloaded
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
class Runtime:
    """What exists only while the app runs; starts empty and is filled by the startup task."""

    model: Model | None = None
    scorer: Scorer | None = None
    http: aiohttp.ClientSession | None = None
    status: Status = Status.STARTING
    failure: str | None = None  # why the start failed
    inflight: int = 0
    receiving: int = 0
    selftest_score: float | None = None

    @contextmanager
    def receiving_body(self, limit: int) -> Iterator[None]:
        """One of `limit` slots for a body still arriving, apart from the scoring slots, or 503 at once."""
        if not self.status.scores:
            raise Overloaded("the model is not ready yet")
        if self.receiving >= limit:
            raise Overloaded(f"{limit} request bodies are already being received")
        self.receiving += 1
        try:
            yield
        finally:
            self.receiving -= 1

    @contextmanager
    def admitted(self, count: int, limit: int) -> Iterator[None]:
        """Take `count` of the `limit` scoring slots for the block, or refuse at once with 503."""
        if not self.status.scores:
            raise Overloaded("the model is not ready yet")
        if self.inflight + count > limit:
            raise Overloaded(f"{self.inflight} of {limit} scoring slots are taken; {count} more do not fit")
        self.inflight += count
        metrics.INFLIGHT.inc(count)
        try:
            yield
        finally:
            self.inflight -= count
            metrics.INFLIGHT.dec(count)


SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
