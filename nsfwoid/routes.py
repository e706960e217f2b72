"""HTTP in and out: parse the request, call the pipeline, render text, JSON or problem+json."""

from __future__ import annotations

import time
from importlib import resources

import mimeparse
import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from . import NAME, package_version
from .admission import RUNTIME, SETTINGS, Status, receiving, request_deadline
from .answers import json_response, json_text
from .inputs import body_bytes, expect_continue, image_of, read_input
from .scoring import format_score, log_scored

DESCRIPTION = "Scores how likely an image is to be NSFW, with Yahoo's open_nsfw model"
HOME = "https://www.mediawiki.org/wiki/Nsfwoid"


# On a tie (no Accept, */*, equal qualities) the last one wins: text stays the default.
ANSWER_TYPES = ["application/json", "text/plain"]


def wants_json(request: web.Request) -> bool:
    """Content negotiation, quality values included: JSON only when Accept prefers it to text."""
    accept = request.headers.get("Accept", "")
    try:
        return bool(accept) and mimeparse.best_match(ANSWER_TYPES, accept) == "application/json"
    except ValueError:  # an unreadable Accept header: the default answer
        return False


def _package_text(name: str) -> str:
    return resources.files("nsfwoid").joinpath(name).read_text(encoding="utf-8")


def add_routes(app: web.Application) -> None:
    openapi_text = _package_text("openapi.yaml")
    spec_json = json_text(yaml.safe_load(_package_text("spec.yaml")))

    async def root(request: web.Request) -> web.Response:
        if "spec" in request.query:
            return web.Response(text=spec_json, content_type="application/json")
        return web.Response(text=f"{NAME}: POST an image, or url=…, to / to get its NSFW score. "
                                 "API: /openapi.yaml\n")

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=openapi_text, content_type="application/yaml")

    app.router.add_get("/", root)
    app.router.add_post("/", score, expect_handler=expect_continue)
    app.router.add_post("/v1/score", score, expect_handler=expect_continue)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/_info", info)
    app.router.add_get("/openapi.yaml", openapi)


async def score(request: web.Request) -> web.Response:
    settings, runtime = request.app[SETTINGS], request.app[RUNTIME]
    started = time.perf_counter()
    # The body stays held, by the request, until the answer.
    with runtime.holding(body_bytes(request, settings), settings.image_memory):
        async with receiving(request):
            given = await read_input(request, settings)
        with runtime.admitted(1, settings.max_inflight), runtime.holding_later(settings.image_memory) as hold:
            async with request_deadline(settings) as deadline:
                image = await image_of(given, runtime.http, settings, hold)
                scored = await runtime.scorer.score(image.data, deadline=deadline)
    log_scored(scored, image.source)
    if not wants_json(request):
        return web.Response(text=format_score(scored.score) + "\n")
    return json_response(scored.to_json(model=runtime.model.identity, source=image.source,
                                        fetch_seconds=image.fetch_seconds,
                                        total_seconds=time.perf_counter() - started))


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = {"status": runtime.status.value}
    if runtime.model is not None:
        body["model"] = {**runtime.model.identity, "provider": runtime.model.provider}
    if runtime.selftest_score is not None:
        body["selftest_score"] = runtime.selftest_score
    if runtime.failure:
        body["detail"] = runtime.failure
    return json_response(body, status=200 if runtime.status is Status.OK else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


async def info(request: web.Request) -> web.Response:
    return json_response({"name": NAME, "version": package_version(), "description": DESCRIPTION, "home": HOME})
