"""aiohttp's HTTP/1 protocol, adjusted for real clients and hostile ones: a singleton header repeated with the same
value is one header, broken body framing fails the body a handler is reading, and a request aiohttp cannot parse
gets a problem+json answer like every other 4xx.

aiohttp's parsers refuse any repeated singleton header (Content-Type, Host, User-Agent…), even with the same value.
Wikimedia's service-checker sends its Content-Type twice. nginx and Envoy take identical repeats as one, and so does
RequestParser: where a request starts at a known message boundary and its whole header section has arrived, a repeat
with the same value is dropped before aiohttp's C parser (llhttp) sees it, and a repeat with another value is refused,
naming the header. Content-Length and Transfer-Encoding are never touched: llhttp refuses them repeated, as before,
and decides every request's framing, so request smuggling stays impossible. (aiohttp's pure-Python parser cannot be
used instead: it takes any token as a method and waits on an overflowing chunk size.)

aiohttp's C parser (3.14) drops the body of a request whose chunked framing breaks after the handler has started
reading it: the parser raises, aiohttp queues a 400 for after the handler, and the handler waits for a body that
will never end, until its read timeout. aiohttp's pure-Python parser fails the body instead. BodyFailingRequestParser
does the same around the C parser, whose strictness (request smuggling, chunk size overflow) is kept.

A request that cannot be parsed at all (a header over the size limit, a method llhttp does not know, a bare LF)
never reaches the application or its middlewares: aiohttp's RequestHandler answers it with text/plain.
ProblemRequestHandler answers it as the middleware answers any other bad request.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp import http_parser, web, web_protocol, web_server
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)

from .. import metrics
from ..errors import InternalError, InvalidRequest, Overloaded, Problem, RequestTimeout
from ..logging import get_logger
from .answers import counted_problem_response, problem_bytes
from .state import REQUEST_ID_HEADER, TRACE_ID_KEY

AIOHTTP_REQUEST_PARSER = http_parser.HttpRequestParser  # the C parser where aiohttp was built with it
# Singletons that may be repeated with the same value, by their lower-case names: aiohttp's SINGLETON_HEADERS but
# those that frame a request.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
REPEATABLE = frozenset(name.encode() for name in http_parser.SINGLETON_HEADERS - FRAMING_HEADERS)
HEADERS_END = b"\r\n\r\n"
MAX_HEADERS = 128  # a request's header lines, as aiohttp's default; more is 400, naming the number


def header_name(name: str) -> str:
    """A header's name as written in messages: Content-Type."""
    return "-".join(part.capitalize() for part in name.split("-"))


class ConflictingHeader(BadHttpMessage):
    """A singleton header given twice with different values."""


def without_repeats(head: bytes) -> bytes:
    """A request's head (the request line and its header lines, without the blank line) with each repeat of a
    REPEATABLE header that has the same value dropped; a repeat with another value raises ConflictingHeader."""
    request_line, *lines = head.split(b"\r\n")
    seen: dict[bytes, bytes] = {}
    kept = [request_line]
    for line in lines:
        name, colon, value = line.partition(b":")
        key = name.lower()
        if colon and key in REPEATABLE:
            value = value.strip(b" \t")
            if key in seen:
                if seen[key] != value:
                    raise ConflictingHeader(f"{header_name(key.decode())} appears twice with different values")
                continue
            seen[key] = value
        kept.append(line)
    return b"\r\n".join(kept)


# What each parse error means, in words of our own: aiohttp's messages quote the request's bytes.
PARSE_ERRORS = (
    (LineTooLong, "the request line or a header is over the size limit"),
    (BadHttpMethod, "an unknown method"),
    (BadStatusLine, "a malformed request line"),
    (InvalidURLError, "a malformed request target"),
    (InvalidHeader, "a malformed header"),
)
# aiohttp's and llhttp's messages, by their first line (the rest quotes the bytes), in words of our own.
PARSER_MESSAGES = {
    "Too many headers received": f"more than {MAX_HEADERS} headers",
    "Duplicate Content-Length": "Content-Length appears more than once",
    "Transfer-Encoding can't be present with Content-Length": "Transfer-Encoding and Content-Length together",
    "Content-Length can't be present with Transfer-Encoding": "Transfer-Encoding and Content-Length together",
    "Invalid `Transfer-Encoding` header value": "a Transfer-Encoding other than chunked, or chunked twice",
    "Invalid header field char": "a malformed header name",
}
GENERIC_PARSE_ERROR = "it breaks HTTP/1.1's syntax"


class RequestParser:
    """aiohttp's C request parser, with identical repeated singletons taken as one, and a body that fails when its
    framing breaks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._parser = AIOHTTP_REQUEST_PARSER(*args, **kwargs)
        self._body = None  # the body stream of the newest request parsed
        self.at_boundary = True  # the next byte starts a request

    def feed_data(self, data: bytes):
        starts_request = self.at_boundary
        if starts_request and (end := data.find(HEADERS_END)) != -1:
            data = without_repeats(data[:end]) + data[end:]
        try:
            messages, upgraded, tail = self._parser.feed_data(data)
        except HttpProcessingError as exc:
            body = self._body
            if body is not None and not body.is_eof() and body.exception() is None:
                body.set_exception(exc)
            raise
        if messages:
            self._body = messages[-1][1]
        # A request whose head has not all arrived is not at a boundary; one whose body has ended is, unless the same
        # data began another request's head (pipelining), whose repeats are then refused as aiohttp refuses them.
        if data:  # aiohttp resumes a paused parser with b""
            self.at_boundary = bool(messages or not starts_request) and (self._body is None or self._body.is_eof())
        return messages, upgraded, tail

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class ProblemRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering what never reached the application in problem+json, with two
    bounds of its own for clients that hold connections: a request's head must arrive within `header_timeout`
    seconds (of a new connection, or of the request's first byte), and at most `max_connections` are open."""

    def __init__(self, manager: web_server.Server, *, header_timeout: float = 10.0, max_connections: int = 512,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout, self._max_connections = header_timeout, max_connections
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # of the request whose head is awaited

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self._manager.connections) > self._max_connections:
            self._refuse(Overloaded(f"{self._max_connections} connections are open already "
                                    "(NSFWOID_MAX_CONNECTIONS)"), transport)
            return
        self._await_head()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        # aiohttp calls this with b"" to resume a paused connection: no byte of a request
        if data and self._head_deadline is None and isinstance(parser, RequestParser) and parser.at_boundary:
            self._await_head()  # the first byte of another request on a kept-alive connection
        self._head_bytes += len(data)
        count = self._request_count
        super().data_received(data)
        if self._request_count > count and self._head_deadline is not None:  # the head has arrived
            self._head_deadline.cancel()
            self._head_deadline = None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._head_bytes = 0
        self._head_deadline = asyncio.get_running_loop().call_later(self._header_timeout, self._head_too_slow)

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        get_logger().info("request head not received in time", **{"http.request.bytes": self._head_bytes})
        if self.transport is None:
            return
        if self._head_bytes:
            self._refuse(RequestTimeout(f"the request's line and headers did not arrive within "
                                        f"{self._header_timeout:g} s (NSFWOID_HEADER_TIMEOUT)"), self.transport)
        else:  # a connection that never sent a byte: nothing to answer
            self.force_close()  # closes the transport

    def _refuse(self, problem: Problem, transport: asyncio.BaseTransport) -> None:
        metrics.ERRORS.labels(problem.name).inc()
        metrics.count_request("other", "unmatched", problem.status, 0.0)
        transport.write(problem_bytes(problem, uuid.uuid4().hex))
        self.force_close()
        transport.close()  # force_close closes only the transport aiohttp has made its own

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it (see logging.ProtocolErrorFilter)
        trace_id = uuid.uuid4().hex
        request[TRACE_ID_KEY] = trace_id
        problem: Problem
        if status == 400:
            reason = self._reason(exc)
            problem = InvalidRequest(f"not a well-formed HTTP/1.1 request: {reason}")
        else:
            problem = InternalError("internal error")  # past the middleware: logged by aiohttp, without the trace id
        response = counted_problem_response(problem, trace_id)
        response.headers[REQUEST_ID_HEADER] = trace_id
        response.force_close()
        metrics.count_request("other", "unmatched", problem.status, 0.0)
        return response

    @staticmethod
    def _reason(exc: BaseException | None) -> str:
        if isinstance(exc, ConflictingHeader):
            return exc.message
        if isinstance(exc, BadHttpMessage) and exc.message.startswith("Duplicate '"):
            name = exc.message.split("'")[1].lower()  # aiohttp's "Duplicate 'Content-Length' header found."
            if name in http_parser.SINGLETON_HEADERS:  # a name from that list alone: never the request's bytes
                return f"{header_name(name)} appears more than once"
        if isinstance(exc, BadHttpMessage) and exc.message.split(":\n")[0] in PARSER_MESSAGES:
            return PARSER_MESSAGES[exc.message.split(":\n")[0]]
        return next((words for kind, words in PARSE_ERRORS if isinstance(exc, kind)), GENERIC_PARSE_ERROR)


def adapt_aiohttp_protocol() -> None:
    """Every aiohttp server in this process parses requests with RequestParser and answers the requests it cannot
    parse with ProblemRequestHandler."""
    web_protocol.HttpRequestParser = RequestParser
    web_server.RequestHandler = ProblemRequestHandler
