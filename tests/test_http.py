"""The HTTP API end to end: inputs, both response forms, every error type, health."""

import asyncio
import hashlib

import aiohttp
import pytest

from nsfwoid.errors import ALL_PROBLEMS, PROBLEM_CONTENT_TYPE

from . import images

EXPECTED = images.expected_scores()
BRICK = (images.FIDELITY / "brick.jpg").read_bytes()


async def problem_of(response, status: int, name: str) -> dict:
    assert response.status == status
    assert response.content_type == PROBLEM_CONTENT_TYPE
    body = await response.json(content_type=None)
    assert set(body) == {"type", "title", "status", "detail"}
    assert body["type"].endswith(name) and body["status"] == status and body["detail"]
    return body


@pytest.mark.parametrize("path", ["/", "/v1/score"])
async def test_score_by_url(client, upstream, path):
    response = await client.post(path, data={"url": str(upstream.make_url("/image/brick.jpg"))})
    assert response.status == 200 and response.content_type == "text/plain"
    text = await response.text()
    assert text.endswith("\n") and float(text) == pytest.approx(EXPECTED["brick.jpg"], abs=0.005)


async def test_score_by_multipart_url(client, upstream):
    form = aiohttp.FormData()
    form.add_field("url", str(upstream.make_url("/image/brick.jpg")))
    response = await client.post("/", data=form)
    assert response.status == 200
    assert float(await response.text()) == pytest.approx(EXPECTED["brick.jpg"], abs=0.005)


async def test_score_by_file_upload(client):
    form = aiohttp.FormData()
    form.add_field("file", BRICK, filename="brick.jpg", content_type="image/jpeg")
    response = await client.post("/v1/score", data=form)
    assert response.status == 200
    assert float(await response.text()) == pytest.approx(EXPECTED["brick.jpg"], abs=0.005)


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/octet-stream"])
async def test_score_by_raw_body(client, content_type):
    response = await client.post("/", data=BRICK, headers={"Content-Type": content_type})
    assert response.status == 200
    assert float(await response.text()) == pytest.approx(EXPECTED["brick.jpg"], abs=0.005)


async def test_json_answer(client, upstream):
    response = await client.post(
        "/", data={"url": str(upstream.make_url("/image/brick.jpg"))}, headers={"Accept": "application/json"}
    )
    assert response.status == 200 and response.content_type == "application/json"
    body = await response.json()
    assert body["score"] == pytest.approx(EXPECTED["brick.jpg"], abs=0.005)
    assert body["model"] == {"name": "open_nsfw", "sha256": "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"}
    assert body["sha1"] == hashlib.sha1(BRICK).hexdigest()
    assert int(body["sha1_base36"], 36) == int(body["sha1"], 16) and len(body["sha1_base36"]) == 31
    assert body["bytes"] == len(BRICK) and body["source"] == "url"
    assert set(body["timings_ms"]) == {"fetch", "preprocess", "inference", "total"}
    assert all(v >= 0 for v in body["timings_ms"].values())
    assert body["timings_ms"]["total"] >= body["timings_ms"]["inference"]


async def test_healthz_ok_after_selftest(client):
    response = await client.get("/healthz")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok" and body["selftest_score"] == pytest.approx(EXPECTED["warm_flat.png"], abs=1e-4)


async def test_healthz_503_when_the_model_fails(make_client, tmp_path):
    bad = tmp_path / "weights.onnx"
    bad.write_bytes(b"\0" * 100)
    client = await make_client(model_path=str(bad))
    response = await client.get("/healthz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "failed" and "sha256" in body["detail"]
    await problem_of(await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"}), 503, "overloaded")


async def test_healthz_503_before_ready(make_client):
    from nsfwoid.state import RUNTIME

    client = await make_client()
    client.app[RUNTIME].ready = False
    assert (await client.get("/healthz")).status == 503


async def test_healthz_503_while_draining(client):
    from nsfwoid.state import RUNTIME

    client.app[RUNTIME].draining = True  # what `nsfwoid serve` sets first on SIGTERM
    response = await client.get("/healthz")
    assert response.status == 503 and (await response.json())["status"] == "draining"


# Every error type, as a client would cause it.
async def test_missing_input(client):
    await problem_of(await client.post("/", data={"other": "x"}), 400, "missing-input")
    await problem_of(await client.post("/", data=b"", headers={"Content-Type": "image/jpeg"}), 400, "missing-input")
    await problem_of(await client.post("/"), 400, "missing-input")
    await problem_of(await client.post("/", data={"url": "  "}), 400, "missing-input")


@pytest.mark.parametrize("url", ["not a url", "/relative/path.jpg", "ftp://127.0.0.1/a.jpg", "file:///etc/passwd",
                                 "http://", "javascript:alert(1)", "http://[::1"])
async def test_invalid_url(client, url):
    await problem_of(await client.post("/", data={"url": url}), 400, "invalid-url")


async def test_url_not_allowed(client):
    await problem_of(await client.post("/", data={"url": "https://example.org/a.jpg"}), 403, "url-not-allowed")


@pytest.mark.parametrize("code", [404, 410])
async def test_upstream_not_found(client, upstream, code):
    url = str(upstream.make_url(f"/status/{code}"))
    await problem_of(await client.post("/", data={"url": url}), 404, "upstream-not-found")


@pytest.mark.parametrize("code", [500, 403, 204])
async def test_upstream_error(client, upstream, code):
    url = str(upstream.make_url(f"/status/{code}"))
    await problem_of(await client.post("/", data={"url": url}), 502, "upstream-error")


async def test_upstream_refused_connection(client, unused_tcp_port):
    url = f"http://127.0.0.1:{unused_tcp_port}/a.jpg"
    await problem_of(await client.post("/", data={"url": url}), 502, "upstream-error")


async def test_upstream_timeout(make_client, upstream):
    client = await make_client(fetch_timeout=0.5)
    url = str(upstream.make_url("/slow").with_query(seconds="5"))
    started = asyncio.get_running_loop().time()
    await problem_of(await client.post("/", data={"url": url}), 504, "upstream-timeout")
    assert asyncio.get_running_loop().time() - started < 4


async def test_payload_too_large_body(make_client):
    client = await make_client(max_image_bytes=10_000)
    await problem_of(await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"}), 413,
                     "payload-too-large")
    form = aiohttp.FormData()
    form.add_field("file", BRICK, filename="brick.jpg", content_type="image/jpeg")
    await problem_of(await client.post("/", data=form), 413, "payload-too-large")


async def test_payload_too_large_download(make_client, upstream):
    client = await make_client(max_image_bytes=10_000)
    url = str(upstream.make_url("/image/brick.jpg"))
    await problem_of(await client.post("/", data={"url": url}), 413, "payload-too-large")


async def test_unsupported_media_type(client):
    await problem_of(await client.post("/", data=b"hello", headers={"Content-Type": "image/png"}), 415,
                     "unsupported-media-type")
    await problem_of(await client.post("/", data=b"{}", headers={"Content-Type": "application/json"}), 415,
                     "unsupported-media-type")


async def test_invalid_image(client):
    data = images.encode(images.photo("brick.jpg"), "PNG")[:30]
    await problem_of(await client.post("/", data=data, headers={"Content-Type": "image/png"}), 422, "invalid-image")


async def test_image_too_large(client):
    await problem_of(await client.post("/", data=images.bomb_png(), headers={"Content-Type": "image/png"}), 413,
                     "image-too-large")


async def test_overloaded(make_client, upstream):
    client = await make_client(max_inflight=1)
    slow = asyncio.create_task(client.post("/", data={"url": str(upstream.make_url("/slow").with_query(seconds="1"))}))
    await asyncio.sleep(0.3)
    response = await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"})
    await problem_of(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "1"
    assert (await slow).status == 200
    assert (await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"})).status == 200


async def test_request_deadline(make_client, upstream):
    client = await make_client(request_timeout=0.5, fetch_timeout=5)
    url = str(upstream.make_url("/slow").with_query(seconds="3"))
    await problem_of(await client.post("/", data={"url": url}), 503, "overloaded")


async def test_every_problem_type_is_exercised():
    names = {p.name for p in ALL_PROBLEMS}
    assert names == {"missing-input", "invalid-url", "url-not-allowed", "upstream-not-found", "upstream-error",
                     "upstream-timeout", "payload-too-large", "unsupported-media-type", "invalid-image",
                     "image-too-large", "overloaded"}


async def test_routing_errors_are_problems(client):
    response = await client.get("/nope")
    assert response.status == 404 and response.content_type == PROBLEM_CONTENT_TYPE
    response = await client.put("/")
    assert response.status == 405 and response.content_type == PROBLEM_CONTENT_TYPE and "POST" in response.headers["Allow"]


async def test_service_stays_healthy_after_bad_input(client):
    for data in (b"", b"\xff\xd8\xff", images.bomb_png(), b"GIF89a" + b"\0" * 100):
        response = await client.post("/", data=data, headers={"Content-Type": "image/gif"})
        assert 400 <= response.status < 500
    assert (await client.get("/healthz")).status == 200
    assert (await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"})).status == 200
