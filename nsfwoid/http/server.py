"""`nsfwoid serve`: the app on its port, until SIGTERM or SIGINT, then the drain."""

from __future__ import annotations

import asyncio
import os
import signal

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..config import Settings
from ..logging import TRACE_ID, get_logger
from .app import create_app
from .intake import ADMISSION
from .state import PROBLEM_KEY, RUNTIME, TRACE_ID_KEY, Status

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DRAIN_POLL_SECONDS = 0.05
# After the drain: how long aiohttp waits for handlers still running once the listener is closed. It waits
# twice (for handlers, then for connections), and the drain has waited already.
SHUTDOWN_GRACE_SECONDS = 0.25


class CannotListen(Exception):
    """The address is in use, or not ours to bind."""


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain: /healthz 503 while the requests in progress finish, still
    listening, so that probes see the 503; then stop listening."""
    log = get_logger()
    app = create_app(settings)
    # handler_cancellation: a client that hangs up cancels its handler, and so kills its decode worker.
    runner = web.AppRunner(
        app, handle_signals=False, access_log_class=AccessLogger, shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        handler_cancellation=True,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CannotListen(f"cannot listen on {settings.host}:{settings.port}: {reason}") from None
    log.info("listening", **{"server.address": settings.host, "server.port": settings.port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    runtime, admission = app[RUNTIME], app[ADMISSION]
    if runtime.status is Status.OK:
        runtime.status = Status.DRAINING
    log.info("draining", inflight=admission.scoring_slots.taken, drain_timeout=settings.drain_timeout)
    deadline = loop.time() + settings.drain_timeout
    while admission.busy and loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    await runner.cleanup()
    log.info("stopped")


class AccessLogger(AbstractAccessLogger):
    """One ECS line per request, in aiohttp's own access-log hook."""

    def log(self, request, response, time: float) -> None:
        get_logger().info(
            f"{request.method} {request.path} {response.status}",
            **{
                "event.kind": "event",
                "event.category": "web",
                "event.duration": int(time * 1e9),
                "http.request.method": request.method,
                "url.path": request.path,
                "http.response.status_code": response.status,
                "http.response.body.bytes": _body_bytes(response),
                "client.ip": request.remote,
                "user_agent.original": request.headers.get("User-Agent", ""),
                TRACE_ID: request.get(TRACE_ID_KEY, ""),
                **({"error.type": request[PROBLEM_KEY]} if PROBLEM_KEY in request else {}),
            },
        )

    @property
    def enabled(self) -> bool:
        return True


def _body_bytes(response) -> int:
    """The body alone: aiohttp's body_length counts the status line and headers too."""
    return response.content_length if response.content_length is not None else response.body_length
