"""The service's routes: each scoring route is intake → pipeline → answer; the others describe the service."""

from __future__ import annotations

import time
from importlib import resources

import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from .. import HOME, NAME, package_version
from . import answers, intake
from .answers import json_response, json_text
from .intake import expect_continue
from .state import RUNTIME, Status

DESCRIPTION = "Scores how likely an image is to be NSFW, with Yahoo's open_nsfw model"


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
    started = time.perf_counter()
    async with intake.one_image(request) as image:
        scored = await request.app[RUNTIME].pipeline.score(image.data, source=image.source, deadline=image.deadline)
    return answers.score_response(request, scored, image, started)


async def healthz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    body = {"status": runtime.status.value}
    if runtime.pipeline is not None:
        model = runtime.pipeline.model
        body["model"] = {**model.identity, "provider": model.provider}
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
