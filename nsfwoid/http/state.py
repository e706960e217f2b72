"""The app's typed state: the service's status, what exists while it runs (the pipeline, the HTTP session), and
each request's own keys. The slots and bytes that requests take are intake.py's (ADMISSION)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from ..config import Settings
from ..scoring.pipeline import Pipeline


class Status(enum.Enum):
    """The service's one status, as /healthz reports it: starting → ok or failed; ok → draining on SIGTERM."""

    STARTING = "starting"
    OK = "ok"
    FAILED = "failed"
    DRAINING = "draining"


# Whether scoring requests are taken: while draining, those already sent still are.
SCORING = frozenset({Status.OK, Status.DRAINING})


@dataclass
class Runtime:
    """What exists only while the app runs; starts empty and is filled by the startup task."""

    pipeline: Pipeline | None = None
    http: aiohttp.ClientSession | None = None
    status: Status = Status.STARTING
    failure: str | None = None  # why the start failed
    selftest_score: float | None = None

    def fail(self, reason: str) -> None:
        """The service cannot score, and will not recover until it is restarted: /healthz says why."""
        self.failure = reason
        self.status = Status.FAILED


SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
TRACE_ID_KEY = web.RequestKey("trace_id", str)
REQUEST_ID_HEADER = "X-Request-Id"  # a trace id the client gives, and the one each answer carries
PROBLEM_KEY = web.RequestKey("problem", str)  # the type of the problem a request was answered with
