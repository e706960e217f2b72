"""The test settings, and what the tests check of the service's answers: problems, metrics, health."""

from __future__ import annotations

import asyncio
import base64
import time

from prometheus_client.parser import text_string_to_metric_families

from nsfwoid.config import Settings
from nsfwoid.errors import PROBLEM_CONTENT_TYPE, problem_type

# Tests reach only loopback: downloads go to local aiohttp servers, never to real hosts.
TEST_SETTINGS = Settings(
    allowed_hosts=("127.0.0.1", "localhost"),
    allow_private_addresses=True,
    fetch_timeout=5.0,
    request_timeout=10.0,
    log_format="console",
)


async def problem_of(response, status: int, name: str) -> dict:
    """Assert that a response is the named problem+json, and return its body."""
    assert response.status == status
    assert response.content_type == PROBLEM_CONTENT_TYPE
    body = await response.json(content_type=None)
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["type"] == problem_type(name) and body["status"] == status and body["detail"]
    return body


async def scrape(client) -> dict:
    """The service's /metrics, by metric family name."""
    response = await client.get("/metrics")
    assert response.status == 200 and response.content_type == "text/plain"
    return {family.name: family for family in text_string_to_metric_families(await response.text())}


def sample_value(family, suffix: str = "", **labels) -> float:
    """The sum of the family's samples (name + suffix) that have these labels."""
    total = 0.0
    for sample in family.samples:
        if sample.name == family.name + suffix and all(sample.labels.get(k) == v for k, v in labels.items()):
            total += sample.value
    return total


def metric_delta(before: dict, after: dict, name: str, suffix: str = "", **labels) -> float:
    """How much a metric's matching samples moved between two scrapes."""
    return sample_value(after[name], suffix, **labels) - sample_value(before[name], suffix, **labels)


async def until(condition, seconds: float = 10) -> None:
    """Wait until condition() is true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.02)


async def until_healthy(client, seconds: float = 60) -> None:
    """Wait until an in-process app's /healthz says ok, or that the model failed to start."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = await client.get("/healthz")
        if response.status == 200 or (await response.json())["status"] == "failed":
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("the app did not finish starting")


def b64_instance(data: bytes) -> dict:
    """A KServe instance of the image's bytes, TF-Serving's binary form."""
    return {"image": {"b64": base64.b64encode(data).decode()}}
