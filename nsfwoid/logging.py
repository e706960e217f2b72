"""structlog → one ECS 1.11 JSON object per line (or a console renderer for development)."""

from __future__ import annotations

import logging
import sys
from typing import IO

import ecs_logging
import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

SERVICE_NAME = "nsfwoid"
ECS_VERSION = "1.11.0"
TRACE_ID = "trace.id"  # the ECS field
TRACE_ID_KEY = web.RequestKey("trace_id", str)
PROBLEM_KEY = web.RequestKey("problem", str)  # the type of the problem a request was answered with
REQUEST_ID_HEADER = "X-Request-Id"  # a trace id the client gives, and the one each answer carries


def _add_service_name(_, __, event: dict) -> dict:
    event.setdefault("service.name", SERVICE_NAME)
    return event


class EcsFormatter(ecs_logging.StructlogFormatter):
    """ecs-logging's renderer, declaring the ECS version Wikimedia's pipeline expects."""

    def format_to_ecs(self, event_dict: dict) -> dict:
        event_dict["ecs.version"] = ECS_VERSION
        return super().format_to_ecs(event_dict)


def configure_logging(log_format: str = "json", level: str = "info", stream: IO[str] | None = None) -> None:
    """`auto`: the console renderer for a person at a terminal, ECS JSON for everything else (Kubernetes)."""
    stream = stream or sys.stdout
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        numeric_level = logging.INFO
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())  # no escape codes in files
        shared = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso")]
    else:
        renderer = EcsFormatter()
        shared = [_add_service_name, structlog.processors.format_exc_info]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # aiohttp's and asyncio's own stdlib log records go through the same renderer.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    logging.getLogger("aiohttp.access").propagate = False  # AccessLogger below writes those lines
    # Python warnings (Pillow's and numpy's among them) become log lines too, not bare text on stderr.
    logging.captureWarnings(True)
    server_log = logging.getLogger("aiohttp.server")
    if PROTOCOL_ERRORS not in server_log.filters:
        server_log.addFilter(PROTOCOL_ERRORS)


class ProtocolErrorFilter(logging.Filter):
    """aiohttp logs a malformed request at error level, with a stack trace that quotes the raw request: its
    query string, and image bytes. Such a request is the client's fault: one warning line naming its kind."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg, record.args = "malformed request: %s", (type(error).__name__,)
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


PROTOCOL_ERRORS = ProtocolErrorFilter()


def _body_bytes(response) -> int:
    """The body alone: aiohttp's body_length counts the status line and headers too."""
    return response.content_length if response.content_length is not None else response.body_length


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(SERVICE_NAME)


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
