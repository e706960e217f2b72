"""Typed application state: the settings and what exists only while the app runs."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from .config import Settings
from .model import Model
from .scoring import Scorer


@dataclass
class Runtime:
    """What exists only while the app runs; starts empty and is filled by the startup task."""

    model: Model | None = None
    scorer: Scorer | None = None
    http: aiohttp.ClientSession | None = None
    ready: bool = False
    draining: bool = False
    failure: str | None = None
    inflight: int = 0
    selftest_score: float | None = None


SETTINGS = web.AppKey("settings", Settings)
RUNTIME = web.AppKey("runtime", Runtime)
