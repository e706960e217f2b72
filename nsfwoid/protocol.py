"""aiohttp's HTTP/1 protocol, adjusted for hostile clients: broken body framing fails the body a handler is
reading, and a request aiohttp cannot parse gets a problem+json answer like every other 4xx.

aiohttp's C parser (3.14) drops the body of a request whose chunked framing breaks after the handler has started
reading it: the parser raises, aiohttp queues a 400 for after the handler, and the handler waits for a body that
will never end, until its read timeout. aiohttp's pure-Python parser fails the body instead. BodyFailingRequestParser
does the same around the C parser, whose strictness (request smuggling, chunk size overflow) is kept.

A request that cannot be parsed at all (a header over the size limit, a method llhttp does not know, a bare LF)
never reaches the application or its middlewares: aiohttp's RequestHandler answers it with text/plain.
ProblemRequestHandler answers it as the middleware answers any other bad request.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import http_parser, web, web_protocol, web_server
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)

from . import metrics
from .answers import counted_problem_response
from .errors import InternalError, InvalidRequest, Problem
from .logging import REQUEST_ID_HEADER, TRACE_ID_KEY

AIOHTTP_REQUEST_PARSER = http_parser.HttpRequestParser  # the C parser where aiohttp was built with it
# What each parse error means, in words of our own: aiohttp's messages quote the request's bytes.
PARSE_ERRORS = (
    (LineTooLong, "the request line or a header is over the size limit"),
    (BadHttpMethod, "an unknown method"),
    (BadStatusLine, "a malformed request line"),
    (InvalidURLError, "a malformed request target"),
    (InvalidHeader, "a malformed header"),
)
GENERIC_PARSE_ERROR = "it breaks HTTP/1.1's syntax"


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


class ProblemRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering what never reached the application in problem+json."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it (see logging.ProtocolErrorFilter)
        trace_id = uuid.uuid4().hex
        request[TRACE_ID_KEY] = trace_id
        problem: Problem
        if status == 400:
            reason = next((words for kind, words in PARSE_ERRORS if isinstance(exc, kind)), GENERIC_PARSE_ERROR)
            problem = InvalidRequest(f"not a well-formed HTTP/1.1 request: {reason}")
        else:
            problem = InternalError("internal error")  # past the middleware: logged by aiohttp, without the trace id
        response = counted_problem_response(problem, trace_id)
        response.headers[REQUEST_ID_HEADER] = trace_id
        response.force_close()
        metrics.count_request("other", "unmatched", problem.status, 0.0)
        return response


def adapt_aiohttp_protocol() -> None:
    """Every aiohttp server in this process parses requests with BodyFailingRequestParser and answers the requests
    it cannot parse with ProblemRequestHandler."""
    web_protocol.HttpRequestParser = BodyFailingRequestParser
    web_server.RequestHandler = ProblemRequestHandler
