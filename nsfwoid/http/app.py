"""create_app(settings): routes, middlewares, and the resources with a lifetime (cleanup_ctx)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import structlog
from aiohttp import hdrs, web

from .. import metrics
from ..config import Settings
from ..errors import InternalError, Problem
from ..fetch.download import create_session
from ..logging import TRACE_ID, get_logger
from ..scoring.model import load_model
from ..scoring.pipeline import running_pipeline, self_test
from ..scoring.sandbox import DecodePool
from . import routes
from .answers import counted_problem_response, http_problem_response, problem_from_http
from .intake import ADMISSION, Admission, check_head, client_max_size
from .kserve import add_kserve_routes
from .liftwing import add_liftwing_routes
from .protocol import MAX_HEADERS, adapt_aiohttp_protocol
from .state import PROBLEM_KEY, REQUEST_ID_HEADER, RUNTIME, SETTINGS, TRACE_ID_KEY, Runtime, Status

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that hung up before the answer
REQUEST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def create_app(settings: Settings) -> web.Application:
    """The service: its routes, its middleware, and what lives as long as it (the HTTP session, the pipeline)."""
    settings.check_serving()
    adapt_aiohttp_protocol()
    app = web.Application(
        client_max_size=client_max_size(settings),
        middlewares=[observe_middleware],
        # Request bodies are never decompressed (a Content-Encoding is refused with 415), and a body left unread
        # when the answer goes is not drained: the connection closes.
        handler_args={"max_field_size": 16384, "max_headers": MAX_HEADERS, "auto_decompress": False,
                      "lingering_time": 0, "keepalive_timeout": settings.keepalive_timeout,
                      "header_timeout": settings.header_timeout, "max_connections": settings.max_connections},
    )
    app[SETTINGS] = settings
    app[RUNTIME] = Runtime()
    app[ADMISSION] = Admission()
    app.cleanup_ctx.append(http_session_ctx)
    app.cleanup_ctx.append(pipeline_ctx)
    routes.add_routes(app)
    add_kserve_routes(app)
    add_liftwing_routes(app)
    return app


async def http_session_ctx(app: web.Application):
    runtime = app[RUNTIME]
    runtime.http = create_session(app[SETTINGS])
    yield
    await runtime.http.close()


async def pipeline_ctx(app: web.Application):
    """The decode workers start at once; the pipeline is built in the background once the model has loaded, then
    scores its self-test: /healthz says 503 until it passes."""
    settings, runtime = app[SETTINGS], app[RUNTIME]
    async with DecodePool(settings, runtime.fail) as pool, contextlib.AsyncExitStack() as running:
        startup = asyncio.create_task(_start_pipeline(settings, runtime, pool, running))
        yield
        startup.cancel()
        await asyncio.gather(startup, return_exceptions=True)


async def _start_pipeline(settings: Settings, runtime: Runtime, pool: DecodePool,
                          running: contextlib.AsyncExitStack) -> None:
    log = get_logger()
    try:
        model = await asyncio.to_thread(load_model, settings)
        metrics.MODEL_INFO.info({**model.identity, "provider": model.provider})
        runtime.pipeline = await running.enter_async_context(running_pipeline(settings, model, pool))
        score = runtime.selftest_score = await self_test(runtime.pipeline)
    except Exception as exc:
        runtime.fail(str(exc))
        log.critical("model failed to start", **{"error.message": str(exc), "error.type": type(exc).__name__})
        return
    runtime.status = Status.OK
    log.info("model ready", provider=model.provider, selftest_score=score)


def _route_label(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


def _trace_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    if 0 < len(given) <= 128 and set(given) <= REQUEST_ID_CHARS:
        return given
    return uuid.uuid4().hex


@web.middleware
async def observe_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Trace id, problem+json rendering of every error, and the HTTP metrics."""
    started = time.perf_counter()
    trace_id = _trace_id(request)
    request[TRACE_ID_KEY] = trace_id
    structlog.contextvars.bind_contextvars(**{TRACE_ID: trace_id})
    try:
        check_head(request, request.app[SETTINGS])
        response = await handler(request)
    except Problem as problem:
        response = counted_problem_response(problem, trace_id)
        request[PROBLEM_KEY] = problem.type_uri
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        problem = problem_from_http(exc, request.app[SETTINGS].max_image_bytes)
        response = counted_problem_response(problem, trace_id) if problem else http_problem_response(exc, trace_id)
        if problem:
            request[PROBLEM_KEY] = problem.type_uri
    except ConnectionResetError:  # the client hung up, mid-body or while waiting: nobody to answer
        get_logger().info("client closed the connection")
        response = web.Response(status=CLIENT_CLOSED_REQUEST, reason="Client Closed Request")
    except asyncio.CancelledError:
        if request.transport is not None and not request.transport.is_closing():
            raise  # cancelled for another reason than a hang-up: shutting down
        # The client hung up and aiohttp cancelled the handler (handler_cancellation): count it, then let go.
        get_logger().info("client closed the connection")
        _count(request, CLIENT_CLOSED_REQUEST, started)
        raise
    except Exception:
        get_logger().exception("unhandled error")
        problem = InternalError("internal error; the log line with this request's trace id has the cause")
        response = counted_problem_response(problem, trace_id)
    finally:
        structlog.contextvars.unbind_contextvars(TRACE_ID)
    if request.body_exists and not request.content.is_eof():
        response.force_close()  # answered before the body was read: close rather than drain a hostile body
    response.headers[REQUEST_ID_HEADER] = trace_id
    _count(request, response.status, started)
    return response


def _method_label(request: web.Request) -> str:
    # Not the method as sent: aiohttp's pure-Python parser takes any token as a method, and each new label
    # would be a new series for as long as the process lives.
    return request.method if request.method in hdrs.METH_ALL else "other"


def _count(request: web.Request, status: int, started: float) -> None:
    metrics.count_request(_method_label(request), _route_label(request), status, time.perf_counter() - started)

