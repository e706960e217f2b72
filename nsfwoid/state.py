"""Typed application state: the settings and what exists only while the app runs."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from .config import Settings
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
    selftest_score: float | None = None


SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
