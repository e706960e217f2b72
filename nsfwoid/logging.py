"""structlog → one ECS 1.11 JSON object per line (or a console renderer for development)."""

from __future__ import annotations

import logging
import sys
from typing import IO

import ecs_logging
import structlog
from aiohttp.http_exceptions import HttpProcessingError

from . import NAME

ECS_VERSION = "1.11.0"
TRACE_ID = "trace.id"  # the ECS field


def _add_service_name(_, __, event: dict) -> dict:
    event.setdefault("service.name", NAME)
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
    logging.getLogger("aiohttp.access").propagate = False  # http/server.py's AccessLogger writes those lines
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


def get_logger() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(NAME)
