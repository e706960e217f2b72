"""aiohttp's request parser, with broken body framing failing the body that a handler is reading.

aiohttp's C parser (3.14) drops the body of a request whose chunked framing breaks after the handler has started
reading it: the parser raises, aiohttp queues a 400 for after the handler, and the handler waits for a body that
will never end, until its read timeout. aiohttp's pure-Python parser fails the body instead. This wrapper does the
same around the C parser, whose strictness (request smuggling, chunk size overflow) is kept.
"""

from __future__ import annotations

from typing import Any

from aiohttp import http_parser, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

AIOHTTP_REQUEST_PARSER = http_parser.HttpRequestParser  # the C parser where aiohttp was built with it


class BodyFailingRequestParser:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._parser = AIOHTTP_REQUEST_PARSER(*args, **kwargs)
        self._body = None  # the body stream of the newest request parsed

    def feed_data(self, data: bytes):
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            body = self._body
            if body is not None and not body.is_eof() and body.exception() is None:
                body.set_exception(exc)
            raise
        if messages:
            self._body = messages[-1][1]
        return messages, upgraded, tail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def fail_bodies_on_broken_framing() -> None:
    """Every aiohttp server in this process parses requests with BodyFailingRequestParser."""
    web_protocol.HttpRequestParser = BodyFailingRequestParser
