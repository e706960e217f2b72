from __future__ import annotations

import os

# No test process, nor any service or CLI it starts, sends onnxruntime's telemetry (docs/security.md).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import asyncio
import dataclasses

import pytest
from aiohttp import web

from nsfwoid.http import app as app_module
from nsfwoid.http.app import create_app
from nsfwoid.scoring import imaging
from nsfwoid.scoring.model import load_model

from . import helpers, images

# Why a test is slow: each of these markers makes it `slow` too (pyproject.toml).
SLOW_REASONS = ("root", "wiki", "browser", "processes")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(reason) for reason in SLOW_REASONS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def pillow_settings():
    """What the app and the CLI set at start-up, for the tests that call imaging directly."""
    imaging.configure_pillow(helpers.TEST_SETTINGS.max_pixels)


# The settings the model is loaded with; an app that changes one loads its own.
MODEL_SETTINGS = {"model_path", "providers", "tf32", "inference_threads", "inference_runs", "precision"}


@pytest.fixture(scope="session")
def model():
    return load_model(dataclasses.replace(helpers.TEST_SETTINGS, inference_threads=2))


@pytest.fixture
def make_client(aiohttp_client, model, monkeypatch):
    """A client of a real running app; waits until the model has loaded and passed its self-test."""

    def load_shared_model(settings):
        """The session's model, where the settings would load the same one: loading one per app is most of a
        test."""
        same = all(getattr(settings, name) == getattr(helpers.TEST_SETTINGS, name) for name in MODEL_SETTINGS)
        return model if same else load_model(settings)

    monkeypatch.setattr(app_module, "load_model", load_shared_model)

    async def make(**overrides):
        app = create_app(dataclasses.replace(helpers.TEST_SETTINGS, **overrides))
        client = await aiohttp_client(app)
        await helpers.until_healthy(client)
        return client

    return make


@pytest.fixture
async def client(make_client):
    return await make_client()


@pytest.fixture
async def upstream(aiohttp_server):
    """A local image host: fixtures, status codes, redirects, slow and oversized answers."""

    async def image(request):
        return web.Response(body=(images.FIDELITY / request.match_info["name"]).read_bytes(),
                            content_type="image/jpeg")

    async def status(request):
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def redirect(request):
        hops = int(request.match_info["hops"])
        target = "/image/brick.jpg" if hops <= 1 else f"/redirect/{hops - 1}"  # N hops in all
        raise web.HTTPFound(target)

    async def redirect_to(request):
        raise web.HTTPFound(request.query["target"])

    async def slow(request):
        await asyncio.sleep(float(request.query.get("seconds", "30")))
        return web.Response(body=(images.FIDELITY / "brick.jpg").read_bytes(), content_type="image/jpeg")

    async def huge_length(request):
        response = web.StreamResponse(headers={"Content-Length": str(10**12)})
        await response.prepare(request)
        await response.write(b"\xff\xd8")
        return response

    async def stalled(request):
        """Headers (Content-Length from ?length=, else chunked; Content-Encoding from ?encoding=), two bytes, then
        nothing for 30 s."""
        headers = {"Content-Encoding": request.query["encoding"]} if "encoding" in request.query else {}
        if "length" in request.query:
            headers["Content-Length"] = request.query["length"]
        response = web.StreamResponse(headers=headers)
        if "length" not in request.query:
            response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"\x1f\x8b")  # the start of a JPEG would do as well: nothing decodes two bytes
        await asyncio.sleep(30)
        return response

    async def endless(request):
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"\0" * 65536
        try:
            for _ in range(100_000):
                await response.write(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response

    app = web.Application()
    app.router.add_get("/image/{name}", image)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/redirect/{hops}", redirect)
    app.router.add_get("/redirect-to", redirect_to)
    app.router.add_get("/slow", slow)
    app.router.add_get("/huge-length", huge_length)
    app.router.add_get("/stalled", stalled)
    app.router.add_get("/endless", endless)
    return await aiohttp_server(app)
