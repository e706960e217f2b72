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

from aiohttp import web

from ..config import Settings
from ..errors import InvalidRequest, MissingInput, Problem, check_size
from ..scoring.model import MODEL_NAME
from . import answers, intake
from .answers import json_response
from .intake import expect_continue
from .state import RUNTIME, SETTINGS, TRACE_ID_KEY, Status

MODEL_PATH = f"/v1/models/{MODEL_NAME}"
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


def instances_of(payload: object) -> list | None:
    """The call's `instances`: a list of at least one; None if it has none."""
    instances = payload.get("instances") if isinstance(payload, dict) else None
    return instances if isinstance(instances, list) and instances else None


async def predict(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    async with intake.json_call(request) as body:
        # Parsed off the event loop: megabytes of base64.
        instances = instances_of(await asyncio.to_thread(parse_call, body, settings.max_instances))
        if instances is None:
            raise InvalidRequest('send {"instances": [...]} with at least one instance')
        if len(instances) > settings.max_instances:
            raise InvalidRequest(f"{len(instances)} instances; at most {settings.max_instances} in one call")
        # One slot per instance, but at most all of them, so that a full call always fits an idle service.
        async with intake.admitted(request, min(len(instances), settings.max_inflight)) as deadline:
            predictions = await asyncio.gather(*(_prediction(request, instance, deadline) for instance in instances))
    return json_response({"predictions": predictions})


async def _prediction(request: web.Request, instance: object, deadline: float | None) -> dict:
    """One instance's prediction: the JSON answer of POST /v1/score, or its problem alone."""
    started = time.perf_counter()
    pipeline = request.app[RUNTIME].pipeline
    try:
        given = await instance_input(instance, request.app[SETTINGS])
        async with intake.image_of(given, request.app, deadline) as image:
            scored = await pipeline.score(image.data, source=image.source, deadline=deadline)
            return answers.score_json(scored, image, started)
    except Problem as problem:
        return {"error": problem.to_dict(request.get(TRACE_ID_KEY))}


def parse_call(body: bytes, max_instances: int) -> object:
    """The JSON, if it has no more STRUCTURE_BYTES than a call of `max_instances` needs: what the parse builds is
    then about the body's size, and is charged so."""
    if sum(body.count(byte) for byte in STRUCTURE_BYTES) > STRUCTURE_PER_INSTANCE * (max_instances + 4):
        raise InvalidRequest(f"the JSON has more objects, arrays and values than a call of {max_instances} "
                             "instances needs (NSFWOID_MAX_INSTANCES)")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest('the body is not JSON; send {"instances": [...]}') from None
    except RecursionError:  # json's C scanner recurses once per level: a few kilobytes of "[" exhaust the stack
        raise InvalidRequest("the JSON is nested too deeply") from None


async def instance_input(instance: object, settings: Settings) -> intake.RequestInput:
    """A KServe instance's image bytes, decoded from base64, or its URL still to fetch."""
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
        return intake.RequestInput(data, None, "body")
    if "url" not in instance:
        raise InvalidRequest('an instance is {"image": {"b64": "…"}} or {"url": "…"}')
    url = instance["url"]
    if not isinstance(url, str):
        raise InvalidRequest('"url" must be a string')
    if not url.strip():
        raise MissingInput('"url" is empty')
    return intake.RequestInput(None, url, "url")


def _b64decode(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        # TF-Serving's decoder skips whitespace, so clients may send base64 wrapped in lines, as MIME's is.
        return base64.b64decode(encoded.encode("ascii").translate(None, string.whitespace.encode()), validate=True)
