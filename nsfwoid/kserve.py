"""KServe's V1 protocol, as Lift Wing's clients speak it: readiness and :predict with `instances`.

Each instance is `{"image": {"b64": "…"}}` (TF-Serving's binary form, as Lift Wing's image models take it)
or `{"url": "…"}`. The prediction of each is the JSON answer of POST /v1/score, or `{"error": {problem}}`
for that instance alone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import string
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from .admission import RUNTIME, SETTINGS, Status, receiving, request_deadline
from .answers import json_response
from .config import Settings
from .errors import InvalidRequest, MissingInput, Problem, check_size
from .inputs import RequestInput, body_bytes, expect_continue, image_of, read_body
from .logging import TRACE_ID_KEY
from .model import MODEL_NAME
from .scoring import log_scored

MODEL_PATH = f"/v1/models/{MODEL_NAME}"
# A call holds its body, the parsed JSON with its base64 text, and the decoded images: about three times its size.
BODY_COPIES = 3
# What a parse of JSON builds, beyond its strings, is bounded before it starts by the bytes that open or separate
# objects, arrays and values: base64 has none of them, and a call has at most NSFWOID_MAX_INSTANCES small
# instances. Without the bound, 25 MiB of {"instances": [{}, {}, …]} would build 700 MiB of dicts.
STRUCTURE_BYTES = (b"{", b"[", b",", b":")
STRUCTURE_PER_INSTANCE = 16  # an instance has 4 or 5; the rest is for commas and colons in URLs


def add_kserve_routes(app: web.Application) -> None:
    app.router.add_get(MODEL_PATH, model_ready)
    app.router.add_post(MODEL_PATH + ":predict", predict, expect_handler=expect_continue)


async def model_ready(request: web.Request) -> web.Response:
    return readiness(request, MODEL_NAME)


def readiness(request: web.Request, name: str) -> web.Response:
    """KServe V1's model readiness: 200 once the model has passed its self-test, else 503."""
    ready = request.app[RUNTIME].status is Status.OK
    return json_response({"name": name, "ready": ready}, status=200 if ready else 503)


@asynccontextmanager
async def received_call(request: web.Request) -> AsyncIterator[object]:
    """A call's JSON body, received in a body slot and parsed; held against NSFWOID_IMAGE_MEMORY, at three times
    its size, until the block ends."""
    settings, runtime = request.app[SETTINGS], request.app[RUNTIME]
    with runtime.holding(min(BODY_COPIES * body_bytes(request, settings), settings.image_memory),
                         settings.image_memory):
        async with receiving(request):
            payload = await json_body(request, settings.max_instances)
        yield payload


async def predict(request: web.Request) -> web.Response:
    settings, runtime = request.app[SETTINGS], request.app[RUNTIME]
    async with received_call(request) as payload:
        instances = _instances(payload)
        if len(instances) > settings.max_instances:
            raise InvalidRequest(f"{len(instances)} instances; at most {settings.max_instances} in one call")
        trace_id = request.get(TRACE_ID_KEY)
        # One slot per instance, but at most all of them, so that a full call always fits an idle service.
        with runtime.admitted(min(len(instances), settings.max_inflight), settings.max_inflight):
            async with request_deadline(settings) as deadline:
                predictions = await asyncio.gather(
                    *(_prediction(instance, request.app, deadline, trace_id) for instance in instances)
                )
    return json_response({"predictions": predictions})


async def json_body(request: web.Request, max_instances: int) -> object:
    """The request's JSON body, parsed off the event loop (megabytes of base64), if it has no more STRUCTURE_BYTES
    than a call of `max_instances` needs: what the parse builds is then about the body's size, and is charged so."""
    body = await read_body(request)
    return await asyncio.to_thread(_parse, body, max_instances)


def _parse(body: bytes, max_instances: int) -> object:
    if sum(body.count(byte) for byte in STRUCTURE_BYTES) > STRUCTURE_PER_INSTANCE * (max_instances + 4):
        raise InvalidRequest(f"the JSON has more objects, arrays and values than a call of {max_instances} "
                             "instances needs (NSFWOID_MAX_INSTANCES)")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest('the body is not JSON; send {"instances": [...]}') from None
    except RecursionError:  # json's C scanner recurses once per level: a few kilobytes of "[" exhaust the stack
        raise InvalidRequest("the JSON is nested too deeply") from None


def _instances(payload: object) -> list:
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest('send {"instances": [...]} with at least one instance')
    return instances


async def _prediction(instance: object, app: web.Application, deadline: float | None, trace_id: str | None) -> dict:
    runtime, settings = app[RUNTIME], app[SETTINGS]
    started = time.perf_counter()
    try:
        given = await _instance_input(instance, settings)
        with runtime.holding_later(settings.image_memory) as hold:
            image = await image_of(given, runtime.http, settings, hold)
            scored = await runtime.scorer.score(image.data, deadline=deadline)
    except Problem as problem:
        return {"error": problem.to_dict(trace_id)}
    log_scored(scored, image.source)
    return scored.to_json(model=runtime.model.identity, source=image.source, fetch_seconds=image.fetch_seconds,
                          total_seconds=time.perf_counter() - started)


async def _instance_input(instance: object, settings: Settings) -> RequestInput:
    """An instance's image bytes, decoded from base64, or its URL still to fetch."""
    if not isinstance(instance, dict):
        raise InvalidRequest('an instance is {"image": {"b64": "…"}} or {"url": "…"}')
    if "image" in instance:
        image = instance["image"]
        encoded = image.get("b64") if isinstance(image, dict) else None
        if not isinstance(encoded, str):
            raise InvalidRequest('"image" must be {"b64": "<base64 of the image bytes>"}')
        try:
            data = await asyncio.to_thread(_b64decode, encoded)
        except (binascii.Error, ValueError):
            raise InvalidRequest('"image.b64" is not valid base64') from None
        if not data:
            raise MissingInput('"image.b64" is empty')
        check_size(len(data), settings.max_image_bytes, "the image")
        return RequestInput(data, None, "body")
    if "url" not in instance:
        raise InvalidRequest('an instance is {"image": {"b64": "…"}} or {"url": "…"}')
    url = instance["url"]
    if not isinstance(url, str):
        raise InvalidRequest('"url" must be a string')
    if not url.strip():
        raise MissingInput('"url" is empty')
    return RequestInput(None, url, "url")


def _b64decode(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        # TF-Serving's decoder skips whitespace, so clients may send base64 wrapped in lines, as MIME's is.
        return base64.b64decode(encoded.encode("ascii").translate(None, string.whitespace.encode()), validate=True)
