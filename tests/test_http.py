"""The HTTP API end to end: inputs, both response forms, every error type, health."""

import asyncio
import contextlib
import gzip
import hashlib
import json
import subprocess
import time

import aiohttp
import pytest

from nsfwoid.errors import ALL_PROBLEMS, PROBLEM_CONTENT_TYPE, problem_type
from nsfwoid.http.intake import ADMISSION
from nsfwoid.http.state import RUNTIME, Status

from . import helpers, images, processes, reference

EXPECTED = reference.expected_scores()
JPEG = {"Content-Type": "image/jpeg"}
# models/README.md: the sha256 of the published weights.
WEIGHTS_SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"
BRICK = (images.FIDELITY / "brick.jpg").read_bytes()


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
    assert body["model"] == {"name": "open_nsfw", "sha256": WEIGHTS_SHA256, "precision": "fp32", "id": WEIGHTS_SHA256}
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
    # Not `overloaded`: no retry will help until the service is restarted.
    response = await client.post("/", data=BRICK, headers=JPEG)
    problem = await helpers.problem_of(response, 503, "service-failed")
    assert "sha256" in problem["detail"] and "Retry-After" not in response.headers


async def test_healthz_503_before_ready(make_client):
    client = await make_client()
    client.app[RUNTIME].status = Status.STARTING
    response = await client.get("/healthz")
    assert response.status == 503 and (await response.json())["status"] == "starting"
    await helpers.problem_of(await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"}), 503,
                             "overloaded")


async def test_healthz_503_while_draining(client):
    client.app[RUNTIME].status = Status.DRAINING  # what `nsfwoid serve` sets first on SIGTERM
    response = await client.get("/healthz")
    assert response.status == 503 and (await response.json())["status"] == "draining"
    # Requests that reach a draining process are still scored: only the probe turns away new traffic.
    assert (await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"})).status == 200


# Every error type, as a client would cause it.
async def test_missing_input(client):
    await helpers.problem_of(await client.post("/", data={}), 400, "missing-input")
    await helpers.problem_of(await client.post("/", data=b"", headers=JPEG), 400, "missing-input")
    await helpers.problem_of(await client.post("/"), 400, "missing-input")
    await helpers.problem_of(await client.post("/", data={"url": "  "}), 400, "missing-input")


async def test_unknown_form_fields_are_refused(client):
    body = await helpers.problem_of(await client.post("/", data={"URL": "x"}), 400, "invalid-request")
    assert "'URL'" in body["detail"]
    form = aiohttp.FormData()
    form.add_field("image", BRICK, filename="brick.jpg", content_type="image/jpeg")
    await helpers.problem_of(await client.post("/v1/score", data=form), 400, "invalid-request")


async def test_a_url_beside_a_file_is_still_vetted(client):
    form = aiohttp.FormData()
    form.add_field("url", "not a url")
    form.add_field("file", BRICK, filename="brick.jpg", content_type="image/jpeg")
    await helpers.problem_of(await client.post("/", data=form), 400, "invalid-url")
    form = aiohttp.FormData()
    form.add_field("url", "http://127.0.0.1/elsewhere.jpg")
    form.add_field("file", BRICK, filename="brick.jpg", content_type="image/jpeg")
    response = await client.post("/", data=form, headers={"Accept": "application/json"})
    assert response.status == 200 and (await response.json())["source"] == "file"


@pytest.mark.parametrize("url", ["not a url", "/relative/path.jpg", "ftp://127.0.0.1/a.jpg", "file:///etc/passwd",
                                 "http://", "javascript:alert(1)", "http://[::1"])
async def test_invalid_url(client, url):
    await helpers.problem_of(await client.post("/", data={"url": url}), 400, "invalid-url")


async def test_url_not_allowed(client):
    await helpers.problem_of(await client.post("/", data={"url": "https://example.org/a.jpg"}), 403, "url-not-allowed")


@pytest.mark.parametrize("code", [404, 410])
async def test_upstream_not_found(client, upstream, code):
    url = str(upstream.make_url(f"/status/{code}"))
    await helpers.problem_of(await client.post("/", data={"url": url}), 404, "upstream-not-found")


@pytest.mark.parametrize("code", [500, 403, 204])
async def test_upstream_error(client, upstream, code):
    url = str(upstream.make_url(f"/status/{code}"))
    await helpers.problem_of(await client.post("/", data={"url": url}), 502, "upstream-error")


async def test_upstream_refused_connection(client, unused_tcp_port):
    url = f"http://127.0.0.1:{unused_tcp_port}/a.jpg"
    await helpers.problem_of(await client.post("/", data={"url": url}), 502, "upstream-error")


async def test_upstream_timeout(make_client, upstream):
    client = await make_client(fetch_timeout=0.5)
    url = str(upstream.make_url("/slow").with_query(seconds="5"))
    started = asyncio.get_running_loop().time()
    await helpers.problem_of(await client.post("/", data={"url": url}), 504, "upstream-timeout")
    assert asyncio.get_running_loop().time() - started < 4


async def test_payload_too_large_body(make_client):
    """Whichever check finds it (the declared length, a chunked body past the cap, a form's file), a 413 names the
    one limit a client can act on."""
    client = await make_client(max_image_bytes=10_000)
    limit = "is over the limit of 10000 bytes (NSFWOID_MAX_IMAGE_BYTES)"
    problem = await helpers.problem_of(await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"}),
                                       413, "payload-too-large")
    assert problem["detail"] == f"the image {limit}"  # under the declared-length cap, which leaves 64 KiB for forms
    large = await client.post("/", data=BRICK * 3, headers={"Content-Type": "image/jpeg"})
    assert (await helpers.problem_of(large, 413, "payload-too-large"))["detail"] == f"the declared length {limit}"

    async def chunks():  # no declared length, past what aiohttp reads
        for _ in range(3):
            yield BRICK

    chunked = await client.post("/", data=chunks(), headers={"Content-Type": "image/jpeg"})
    assert (await helpers.problem_of(chunked, 413, "payload-too-large"))["detail"] == f"the body {limit}"
    form = aiohttp.FormData()
    form.add_field("file", BRICK, filename="brick.jpg", content_type="image/jpeg")
    problem = await helpers.problem_of(await client.post("/", data=form), 413, "payload-too-large")
    assert problem["detail"] == f"the image {limit}"  # the form fits its 64 KiB for fields; its file does not


async def test_payload_too_large_download(make_client, upstream):
    client = await make_client(max_image_bytes=10_000)
    url = str(upstream.make_url("/image/brick.jpg"))
    await helpers.problem_of(await client.post("/", data={"url": url}), 413, "payload-too-large")


async def test_unsupported_media_type(client):
    await helpers.problem_of(await client.post("/", data=b"hello", headers={"Content-Type": "image/png"}), 415,
                     "unsupported-media-type")
    json_call = await client.post("/", data=b"{}", headers={"Content-Type": "application/json"})
    problem = await helpers.problem_of(json_call, 415, "unsupported-media-type")
    assert problem["detail"].endswith("; a KServe call goes to POST /v1/models/open_nsfw:predict")


@pytest.mark.parametrize("fmt, named", [("AVIF", "an AVIF image"), ("PDF", "a PDF file")])
async def test_a_format_nsfwoid_does_not_read_is_named(client, fmt, named):
    """Pillow writes both; nsfwoid reads neither, and says what it found rather than "not an image"."""
    data = images.encode(images.photo("brick.jpg", (64, 48)), fmt)
    problem = await helpers.problem_of(await client.post("/", data=data, headers={"Content-Type": "image/avif"}),
                                       415, "unsupported-media-type")
    assert problem["detail"].startswith(f"{named}, which is not one of JPEG"), problem


async def test_invalid_image(client):
    data = images.encode(images.photo("brick.jpg"), "PNG")[:30]
    response = await client.post("/", data=data, headers={"Content-Type": "image/png"})
    await helpers.problem_of(response, 422, "invalid-image")


async def test_image_too_large(client):
    response = await client.post("/", data=images.bomb_png(), headers={"Content-Type": "image/png"})
    await helpers.problem_of(response, 413, "image-too-large")


async def test_overloaded(make_client, upstream):
    client = await make_client(max_inflight=1)
    slow = asyncio.create_task(client.post("/", data={"url": str(upstream.make_url("/slow").with_query(seconds="1"))}))
    await asyncio.sleep(0.3)
    response = await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"})
    await helpers.problem_of(response, 503, "overloaded")
    assert response.headers["Retry-After"] == "1"
    assert (await slow).status == 200
    assert (await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"})).status == 200


async def test_request_deadline(make_client):
    # A lone image waits 2 s for its batch to fill: the 0.5 s scoring deadline passes first.
    client = await make_client(request_timeout=0.5, fetch_timeout=0.4, batch_wait_ms=2000)
    await helpers.problem_of(await client.post("/", data=BRICK, headers=JPEG), 503, "overloaded")


async def stalled_upload(client, sent: bytes = BRICK[:1000], declared: int = len(BRICK)):
    """A client that declares a whole image, sends the start of it, and stalls: (reader, writer)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                 b"Content-Length: %d\r\n\r\n" % declared + sent)
    await writer.drain()
    return reader, writer


async def test_a_body_that_does_not_arrive_gets_408(make_client):
    client = await make_client(read_timeout=0.5)
    started = asyncio.get_running_loop().time()
    reader, writer = await stalled_upload(client)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
    assert asyncio.get_running_loop().time() - started < 3


async def test_slow_uploads_take_no_scoring_slot(make_client):
    client = await make_client(max_inflight=1, read_timeout=5)
    stalled = [await stalled_upload(client) for _ in range(4)]
    await asyncio.sleep(0.2)
    started = asyncio.get_running_loop().time()
    response = await client.post("/", data=BRICK, headers=JPEG)
    assert response.status == 200 and asyncio.get_running_loop().time() - started < 3
    for _, writer in stalled:
        writer.close()


async def test_bodies_being_received_are_bounded(make_client):
    client = await make_client(max_receiving=2, read_timeout=5)
    stalled = [await stalled_upload(client) for _ in range(2)]
    await asyncio.sleep(0.2)
    body = await helpers.problem_of(await client.post("/", data=BRICK, headers=JPEG), 503, "overloaded")
    assert "being received" in body["detail"]
    for _, writer in stalled:
        writer.close()
    await asyncio.sleep(0.2)
    assert (await client.post("/", data=BRICK, headers=JPEG)).status == 200


async def test_images_held_in_memory_are_bounded(make_client):
    """Bodies count at their declared length from their first byte until their answer."""
    client = await make_client(max_image_bytes=2**20, image_memory=2**21, read_timeout=5)
    stalled = [await stalled_upload(client, declared=2**20) for _ in range(2)]
    await asyncio.sleep(0.2)
    body = await helpers.problem_of(await client.post("/", data=BRICK, headers=JPEG), 503, "overloaded")
    assert "2.0 MiB of images are held" in body["detail"]
    stalled.pop()[1].close()
    await asyncio.sleep(0.2)
    assert (await client.post("/", data=BRICK, headers=JPEG)).status == 200
    stalled.pop()[1].close()
    await helpers.until(lambda: client.app[ADMISSION].image_memory.taken == 0)


async def test_a_download_counts_at_its_declared_length_else_at_the_cap(make_client, upstream):
    """From its headers until it is scored; at the cap when it declares no length, or is compressed (it is read
    decompressed, so its declared length says nothing of its size)."""
    cap = 2**20
    client = await make_client(max_image_bytes=cap, image_memory=2 * cap - 2**17, read_timeout=5)
    held = client.app[ADMISSION].image_memory

    def download(query: str) -> asyncio.Task:
        return asyncio.ensure_future(client.post("/", data={"url": str(upstream.make_url(f"/stalled?{query}"))}))

    def holding(size: int) -> bool:
        return size <= held.taken < size + 2**10  # the forms that carry the URLs are held too: a few bytes each

    declared = 3 * 2**18
    pending = [download(f"length={declared}")]
    await helpers.until(lambda: holding(declared))
    # 1 MiB more fits beside 0.75 MiB; beside a download counted at the cap, it would not.
    full_size = BRICK + b"\0" * (cap - len(BRICK))
    assert (await client.post("/", data=full_size, headers=JPEG)).status == 200
    pending.append(download("encoding=gzip&length=1000"))
    await helpers.until(lambda: holding(declared + cap))
    body = await helpers.problem_of(await client.post("/", data={"url": str(upstream.make_url("/stalled"))}),
                                    503, "overloaded")
    assert "1.0 MiB more do not fit" in body["detail"]
    for task in pending:
        task.cancel()
    await helpers.until(lambda: held.taken == 0)


async def test_the_service_answers_with_these_problem_names():
    """The names are a contract: changing one breaks clients (openapi.yaml and docs/api.md list the same)."""
    names = {p.name for p in ALL_PROBLEMS}
    assert names == {"missing-input", "invalid-url", "url-not-allowed", "upstream-not-found", "upstream-error",
                     "upstream-timeout", "payload-too-large", "unsupported-media-type", "invalid-image",
                     "image-too-large", "overloaded", "not-found", "method-not-allowed", "internal-error",
                     "invalid-request", "request-timeout", "decode-worker-lost", "service-failed"}


async def test_routing_errors_are_problems(client):
    await helpers.problem_of(await client.get("/nope"), 404, "not-found")
    response = await client.put("/")
    await helpers.problem_of(response, 405, "method-not-allowed")
    assert "POST" in response.headers["Allow"]


async def test_internal_errors_are_named_problems(client, monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(client.app[RUNTIME].pipeline.batcher, "score_many", broken)
    response = await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"})
    body = await helpers.problem_of(response, 500, "internal-error")
    assert "a bug of ours" not in body["detail"]  # the cause goes to the log, not to the client


async def test_problems_name_their_request(client):
    response = await client.get("/nope", headers={"X-Request-Id": "trace-42"})
    body = await helpers.problem_of(response, 404, "not-found")
    assert response.headers["X-Request-Id"] == "trace-42"
    assert body["instance"] == "urn:nsfwoid:request:trace-42"
    generated = await client.post("/", data=b"", headers={"Content-Type": "image/jpeg"})
    body = await helpers.problem_of(generated, 400, "missing-input")
    assert body["instance"] == "urn:nsfwoid:request:" + generated.headers["X-Request-Id"]


@pytest.mark.parametrize(("accept", "json_answer"), [
    (None, False), ("*/*", False), ("text/plain", False), ("application/json", True),
    ("application/json;q=0", False), ("text/plain, application/json;q=0.5", False),
    ("application/json, text/plain;q=0.5", True), ("text/plain;q=0.1, application/json", True),
    ("application/*", True), ("image/png", False), ("not a media range", False),
])
async def test_content_negotiation_honours_quality_values(client, accept, json_answer):
    headers = {"Content-Type": "image/jpeg", **({"Accept": accept} if accept else {})}
    response = await client.post("/", data=BRICK, headers=headers)
    assert response.status == 200
    assert response.content_type == ("application/json" if json_answer else "text/plain")


async def test_every_answer_ends_with_a_newline(client):
    answers = [
        await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg", "Accept": "application/json"}),
        await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"}),
        await client.get("/healthz"), await client.get("/_info"), await client.get("/?spec"),
        await client.get("/nope"), await client.post("/", data=b"x", headers={"Content-Type": "image/png"}),
    ]
    for response in answers:
        assert (await response.read()).endswith(b"\n"), response.url


async def test_empty_url_field_is_missing_input(client):
    body = await helpers.problem_of(await client.post("/", data={"url": ""}), 400, "missing-input")
    assert "empty" in body["detail"]
    form = aiohttp.FormData()
    form.add_field("url", "")
    await helpers.problem_of(await client.post("/v1/score", data=form), 400, "missing-input")


async def test_image_sent_as_a_form_by_mistake_is_scored(client):
    # What `curl --data-binary @photo.jpg host/` sends: no -H, so curl says it is a form.
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    by_mistake = await client.post("/", data=BRICK, headers={**form_type, "Accept": "application/json"})
    assert by_mistake.status == 200
    body = await by_mistake.json()
    assert body["source"] == "body" and body["sha1"] == hashlib.sha1(BRICK).hexdigest()
    raw = await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg", "Accept": "application/json"})
    assert body["score"] == (await raw.json())["score"]
    # Text that is neither a form nor an image is still refused plainly.
    await helpers.problem_of(await client.post("/", data=b"\xff\xfe\x00junk", headers=form_type), 415,
                             "unsupported-media-type")


async def test_service_stays_healthy_after_bad_input(client):
    for data in (b"", b"\xff\xd8\xff", images.bomb_png(), b"GIF89a" + b"\0" * 100):
        response = await client.post("/", data=data, headers={"Content-Type": "image/gif"})
        assert 400 <= response.status < 500
    assert (await client.get("/healthz")).status == 200
    assert (await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"})).status == 200


@pytest.mark.processes
async def test_a_client_hanging_up_mid_body_is_499_not_500():
    """Against `nsfwoid serve` itself: its runner, not the test server's, decides what a hang-up does."""
    process, base = await asyncio.to_thread(processes.start_service, stdout=subprocess.PIPE,
                                            NSFWOID_LOG_FORMAT="json", NSFWOID_LOG_LEVEL="info")
    try:
        host, port = base.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /?token=SECRET HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 100000\r\n\r\n" + BRICK[:2000])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await asyncio.sleep(0.5)
        async with aiohttp.ClientSession() as session:
            metrics = await (await session.get(base + "/metrics")).text()
            assert (await session.get(base + "/healthz")).status == 200
    finally:
        process.terminate()
        log = (await asyncio.to_thread(process.communicate, timeout=30))[0]
    assert 'nsfwoid_http_requests_total{method="POST",route="/",status="499"} 1.0' in metrics
    assert 'status="500"' not in metrics
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    hang_up = [e for e in lines if e["message"] == "client closed the connection"]
    assert len(hang_up) == 1 and hang_up[0]["log.level"] == "info" and "error" not in hang_up[0]
    assert "SECRET" not in log and not [e for e in lines if e["log.level"] == "error"]


async def raw_exchange(client, request: bytes, *, to_the_end: bool = False) -> bytes:
    """Send bytes as they are, and read the status line and headers of the answer; or, `to_the_end`, all the
    service sends until it closes the connection."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read() if to_the_end else reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


def multipart(part_headers: bytes, content: bytes) -> bytes:
    body = b"--b\r\n" + part_headers + b"\r\n\r\n" + content + b"\r\n--b--\r\n"
    return (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


@pytest.mark.parametrize("request_bytes", [
    multipart(b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Transfer-Encoding: x-weird',
              BRICK[:200]),
    multipart(b'Content-Disposition: form-data; name="_charset_"', b"x" * 40),
], ids=["unknown part transfer encoding", "_charset_ part"])
async def test_malformed_multipart_is_a_4xx(client, request_bytes):
    head = await raw_exchange(client, request_bytes)
    assert head.startswith(b"HTTP/1.1 415 "), head


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-whatever"])
@pytest.mark.parametrize("content_type", [b"image/jpeg", b"application/x-www-form-urlencoded",
                                          b"multipart/form-data; boundary=b"])
async def test_request_content_encoding_is_refused_unread(client, encoding, content_type):
    # A megabyte declared, a kilobyte of invalid data sent: the answer must not wait for, or decompress, the rest.
    body = gzip.compress(BRICK)[:1000]
    head = await raw_exchange(client, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type
                              + b"\r\nContent-Encoding: " + encoding.encode()
                              + b"\r\nContent-Length: 1000000\r\n\r\n" + body)
    assert head.startswith(b"HTTP/1.1 415 ") and b"Connection: close" in head, head  # closed, not drained


@pytest.mark.parametrize("broken", [b"zz\r\n", b"10\r\n" + b"x" * 20 + b"\r\n", b"ffffffffffffffffff\r\n"],
                         ids=["bad chunk size", "chunk longer than its size", "chunk size overflow"])
@pytest.mark.parametrize("content_type, start", [
    (b"image/jpeg", BRICK),
    (b"multipart/form-data; boundary=b",
     b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n' + BRICK),
], ids=["raw", "multipart"])
async def test_broken_chunked_framing_gets_a_prompt_400(make_client, broken, content_type, start):
    # The framing breaks after a megabyte, once the handler is reading the body: the answer must not wait for the
    # read timeout (30 s here), nor hold the connection open.
    client = await make_client(read_timeout=30)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: " + content_type
                 + b"\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n" + start.ljust(0x100000, b"\0") + b"\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.write(broken)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head, head
    problem = json.loads(body)
    assert problem["type"].endswith("invalid-request") and "cannot be read" in problem["detail"]
    assert b"\0" not in body and b"zz" not in body  # the reason, never the bytes
    assert (await client.post("/", data=BRICK, headers=JPEG)).status == 200


@pytest.mark.parametrize("request_bytes, reason", [
    (b"GET /healthz?token=SECRET HTTP/1.1\r\nHost: x\r\nX-Long: SECRET" + b"a" * 20_000 + b"\r\n\r\n",
     "the request line or a header is over the size limit"),
    (b"GARBAGE /?token=SECRET HTTP/1.1\r\nHost: x\r\n\r\n", "an unknown method"),
    (b"POST /?token=SECRET HTTP/1.1\nHost: x\nContent-Length: 6\n\nSECRET", "a malformed request line"),
    (b"GET /?token=SECRET HTTP/1.1\r\nHost: x\r\nBad Name: SECRET\r\n\r\n", "it breaks HTTP/1.1's syntax"),
    (b"GET /?token=SECRET HTTP/1.1\r\n" + b"".join(b"X-%d: SECRET\r\n" % i for i in range(1000)) + b"\r\n",
     "more than 128 headers"),
], ids=["header over the size limit", "unknown method", "bare LF", "space in a header name", "1,000 headers"])
async def test_requests_aiohttp_cannot_parse_get_a_problem(client, request_bytes, reason):
    """aiohttp answers these itself, before the application and its middlewares: still problem+json, counted, and
    with the reason, never the request's bytes."""
    before = await helpers.scrape(client)
    answer = await raw_exchange(client, request_bytes, to_the_end=True)  # the service closes the connection
    head, _, body = answer.partition(b"\r\n\r\n")
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert head.split(b" ")[1] == b"400", head
    assert headers[b"Content-Type"].split(b";")[0] == PROBLEM_CONTENT_TYPE.encode()
    problem = json.loads(body)
    assert problem["type"] == problem_type("invalid-request") and problem["status"] == 400
    assert problem["detail"] == f"not a well-formed HTTP/1.1 request: {reason}"
    assert problem["instance"].endswith(headers[b"X-Request-Id"].decode())
    assert b"SECRET" not in answer
    after = await helpers.scrape(client)
    assert helpers.metric_delta(before, after, "nsfwoid_errors", "_total", type="invalid-request") == 1
    assert helpers.metric_delta(before, after, "nsfwoid_http_requests", "_total",
                                method="other", route="unmatched", status="400") == 1


async def test_expect_continue_over_the_cap_gets_413_without_100(make_client):
    client = await make_client(max_image_bytes=10_000)
    head = await raw_exchange(client, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                              b"Expect: 100-continue\r\nContent-Length: 1000000000\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in head
    head = await raw_exchange(client, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                              b"Expect: 100-continue\r\nContent-Length: 10\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 100 Continue")


@pytest.mark.parametrize("path, route", [("/", "/"), ("/v1/models/open_nsfw:predict", "/v1/models/open_nsfw:predict")])
async def test_expect_continue_refusal_has_a_trace_id_an_instance_and_is_counted(make_client, path, route):
    """curl sends `Expect: 100-continue` with a large file: its 413 goes through the same path as every answer."""
    client = await make_client(max_image_bytes=10_000)
    before = await helpers.scrape(client)
    answer = await raw_exchange(client, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n".encode()
                                + b"Expect: 100-continue\r\nX-Request-Id: big-upload-1\r\n"
                                + b"Content-Length: 30000000\r\n\r\n", to_the_end=True)
    head, _, body = answer.partition(b"\r\n\r\n")
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert head.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer
    assert headers[b"X-Request-Id"] == b"big-upload-1"
    problem = json.loads(body)
    assert problem["type"] == problem_type("payload-too-large") and problem["instance"].endswith("big-upload-1")
    after = await helpers.scrape(client)
    assert helpers.metric_delta(before, after, "nsfwoid_errors", "_total", type="payload-too-large") == 1
    assert helpers.metric_delta(before, after, "nsfwoid_http_requests", "_total",
                                method="POST", route=route, status="413") == 1


def test_aiohttp_still_has_what_protocol_py_replaces():
    """nsfwoid/http/protocol.py replaces aiohttp's request parser and connection handler through two module globals. A
    release that renamed them would quietly undo it: this fails loudly instead."""
    import inspect

    from aiohttp import http_parser, web_protocol, web_server

    from nsfwoid.http import protocol

    assert "HttpRequestParser(" in inspect.getsource(web_protocol.RequestHandler)
    assert "RequestHandler(" in inspect.getsource(web_server.Server)
    assert hasattr(http_parser, "HttpRequestParser")
    assert {"request", "status", "exc", "message"} <= set(
        inspect.signature(web_protocol.RequestHandler.handle_error).parameters)
    # What ProblemRequestHandler reads of aiohttp's connection handler: its parser, its count of requests parsed,
    # and its server's open connections.
    slots = {name for cls in web_protocol.RequestHandler.__mro__ for name in getattr(cls, "__slots__", ())}
    assert {"_parser", "_request_count", "_manager"} <= slots
    assert isinstance(web_server.Server.connections, property)
    # The singletons aiohttp refuses repeated, whose identical repeats RequestParser drops.
    assert {"content-type", "host", "content-length", "transfer-encoding"} <= http_parser.SINGLETON_HEADERS
    protocol.adapt_aiohttp_protocol()
    assert web_protocol.HttpRequestParser is protocol.RequestParser
    assert web_server.RequestHandler is protocol.ProblemRequestHandler


def post_with(*lines: bytes, body: bytes = BRICK) -> bytes:
    return b"\r\n".join([b"POST / HTTP/1.1", b"Host: x", *lines, b"Content-Length: %d" % len(body), b"", body])


async def answers_on_one_connection(client, requests: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Send each request on one kept-alive connection after the answer to the one before: (head, body) each."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    answers = []
    try:
        for request in requests:
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")))
            answers.append((head, await asyncio.wait_for(reader.readexactly(length), 10)))
    finally:
        writer.close()
    return answers


@pytest.mark.parametrize("repeated", [
    [b"Content-Type: image/jpeg", b"content-type: image/jpeg"],  # as Wikimedia's service-checker sends it
    [b"Content-Type: image/jpeg", b"Content-Type:image/jpeg  "],  # the same value, other whitespace
    [b"Content-Type: image/jpeg", b"User-Agent: a", b"User-Agent: a", b"Host: x"],
], ids=["Content-Type in two cases", "Content-Type with other whitespace", "User-Agent and Host"])
async def test_a_singleton_repeated_with_the_same_value_is_one_header(client, repeated):
    answers = await answers_on_one_connection(client, [post_with(*repeated)] * 2)  # also on a kept-alive connection
    for head, body in answers:
        assert head.startswith(b"HTTP/1.1 200 ") and float(body) == pytest.approx(EXPECTED["brick.jpg"], abs=1e-4)


@pytest.mark.parametrize("lines, reason", [
    ([b"Content-Type: image/jpeg", b"Content-Type: image/png"], "Content-Type appears twice with different values"),
    ([b"Content-Type: image/jpeg", b"Host: y"], "Host appears twice with different values"),
    ([b"Content-Type: image/jpeg", b"Content-Length: %d" % len(BRICK)], "Content-Length appears more than once"),
    ([b"Content-Type: image/jpeg", b"Content-Length: 5"], "Content-Length appears more than once"),
    ([b"Content-Type: image/jpeg", b"Transfer-Encoding: chunked"], "Transfer-Encoding and Content-Length together"),
    ([b"Content-Type: image/jpeg", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
     "a Transfer-Encoding other than chunked, or chunked twice"),
    ([b"Content-Type: image/jpeg", b"Transfer-Encoding: chunked, identity"],
     "a Transfer-Encoding other than chunked, or chunked twice"),
    ([b"Content-Type: image/jpeg", b"Content-Length : 5"], "a malformed header name"),  # space before the colon
], ids=["Content-Type differs", "Host differs", "Content-Length twice, same", "Content-Length twice, differs",
        "Content-Length and Transfer-Encoding", "Transfer-Encoding twice", "Transfer-Encoding not chunked last",
        "space before a colon"])
async def test_repeats_and_framing_that_could_smuggle_a_request_are_refused(client, lines, reason):
    """A request whose framing or meaning is ambiguous gets 400 and a closed connection: nothing after it on the
    connection can be taken for a request of its own. The detail names the header, never quotes the bytes."""
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = await raw_exchange(client, post_with(*lines, body=BRICK + smuggled), to_the_end=True)  # then closed
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", head
    problem = json.loads(body)
    assert problem["type"].endswith("invalid-request"), problem
    assert problem["detail"] == f"not a well-formed HTTP/1.1 request: {reason}"
    assert answer.count(b"\r\nX-Request-Id: ") == 1  # the smuggled GET was never answered


async def test_a_repeat_in_a_head_that_trickles_in_keeps_aiohttps_refusal(client):
    """Repeats are dropped only where a request's whole head arrives at once: one sent byte by byte is refused
    as aiohttp refuses it, and named."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        for byte in post_with(b"Content-Type: image/jpeg", b"Content-Type: image/jpeg", body=b"x")[:-1]:
            writer.write(bytes([byte]))
            await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400", head
    assert json.loads(body)["detail"] == "not a well-formed HTTP/1.1 request: Content-Type appears more than once"


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the service sent before it closed the connection; fails if it did not close in time."""
    return await asyncio.wait_for(reader.read(), seconds)


async def test_connections_whose_heads_never_arrive_are_cut_at_the_header_timeout(make_client):
    """Ten connections that trickle a header a byte at a time, and ten that send nothing, are all closed once
    NSFWOID_HEADER_TIMEOUT passes: the tricklers with a 408 naming the setting, the silent ones without a word.
    Meanwhile the service answers others at once."""
    client = await make_client(header_timeout=1.0)
    started = time.monotonic()
    connections = [await asyncio.open_connection(client.server.host, client.server.port) for _ in range(20)]

    async def trickle(writer: asyncio.StreamWriter) -> None:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ")
        with contextlib.suppress(ConnectionError):
            while not writer.is_closing():
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.2)

    tricklers = [asyncio.create_task(trickle(writer)) for _, writer in connections[:10]]
    assert (await client.get("/healthz")).status == 200
    answers = await asyncio.gather(*(closed_within(reader, 3) for reader, _ in connections))
    elapsed = time.monotonic() - started
    print(f"twenty slow or silent connections cut {elapsed:.2f} s after they opened (NSFWOID_HEADER_TIMEOUT=1)")
    for task in tricklers:
        task.cancel()
    for _, writer in connections:
        writer.close()
    assert elapsed < 2.5, elapsed
    for answer in answers[:10]:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head, head
        problem = json.loads(body)
        assert problem["type"] == problem_type("request-timeout") and "NSFWOID_HEADER_TIMEOUT" in problem["detail"]
    assert answers[10:] == [b""] * 10
    assert (await client.get("/healthz")).status == 200


async def test_a_kept_alive_connection_gets_the_header_timeout_for_each_request_and_closes_when_idle(make_client):
    client = await make_client(header_timeout=1.0, keepalive_timeout=1.5)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.startswith(b"Content-Length")))
        await reader.readexactly(length)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the next request's head, never finished
        started = time.monotonic()
        answer = await closed_within(reader, 3)
        assert answer.startswith(b"HTTP/1.1 408 ") and 0.8 < time.monotonic() - started < 1.5
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:  # idle after an answer: closed at the keep-alive timeout
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        started = time.monotonic()
        await closed_within(reader, 4)
        assert 1.0 < time.monotonic() - started < 3.5
    finally:
        writer.close()


async def test_connections_over_the_limit_get_503_overloaded_and_are_closed(make_client):
    client = await make_client(max_connections=4, header_timeout=30.0)
    held = [await asyncio.open_connection(client.server.host, client.server.port) for _ in range(4)]
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    answer = await closed_within(reader, 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in head, head
    problem = json.loads(body)
    assert problem["type"] == problem_type("overloaded") and "NSFWOID_MAX_CONNECTIONS" in problem["detail"]
    for _, held_writer in held:
        held_writer.close()
    await helpers.until(lambda: len(client.server.runner.server.connections) < 4)  # the client keeps one of its own
    assert (await client.get("/healthz")).status == 200  # a place again
