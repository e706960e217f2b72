"""KServe V1, as Lift Wing's clients call it: readiness, and :predict with mixed good and bad instances."""

import asyncio
import base64

import pytest

from nsfwoid.errors import TYPE_PREFIX, problem_type
from nsfwoid.http.state import RUNTIME, Status

from . import helpers, images, reference

PREDICT = "/v1/models/open_nsfw:predict"
BRICK = (images.FIDELITY / "brick.jpg").read_bytes()
WARM = (images.FIDELITY / "warm_flat.png").read_bytes()


b64 = helpers.b64_instance


@pytest.mark.parametrize("name", ["open_nsfw", "nsfw-model"])  # and Lift Wing's retired model, an alias
async def test_readiness(client, name):
    response = await client.get(f"/v1/models/{name}")
    assert response.status == 200 and await response.json() == {"name": name, "ready": True}
    client.app[RUNTIME].status = Status.STARTING
    response = await client.get(f"/v1/models/{name}")
    assert response.status == 503 and await response.json() == {"name": name, "ready": False}
    await helpers.problem_of(await client.get("/v1/models/other_model"), 404, "not-found")


async def test_mixed_instances_each_get_their_own_answer(client, upstream):
    instances = [
        b64(BRICK),
        {"image": {"b64": "not base64!"}},
        {"url": str(upstream.make_url("/image/warm_flat.png"))},
        {"url": "ftp://127.0.0.1/a.jpg"},
        b64(b"hello, world"),
        42,
        {"image": "raw"},
        {},
        b64(WARM),
    ]
    response = await client.post(PREDICT, json={"instances": instances})
    assert response.status == 200 and response.content_type == "application/json"
    predictions = (await response.json())["predictions"]
    assert len(predictions) == len(instances)
    expected = reference.expected_scores()
    assert predictions[0]["score"] == pytest.approx(expected["brick.jpg"], abs=0.005)
    assert predictions[0]["source"] == "body" and predictions[0]["bytes"] == len(BRICK)
    assert predictions[2]["score"] == pytest.approx(expected["warm_flat.png"], abs=1e-4)
    assert predictions[2]["source"] == "url" and "fetch" in predictions[2]["timings_ms"]
    assert predictions[8]["score"] == pytest.approx(expected["warm_flat.png"], abs=1e-4)
    errors = {i: p["error"]["type"].removeprefix(TYPE_PREFIX) for i, p in enumerate(predictions) if "error" in p}
    assert errors == {1: "invalid-request", 3: "invalid-url", 4: "unsupported-media-type", 5: "invalid-request",
                      6: "invalid-request", 7: "invalid-request"}
    for index in errors:
        problem = predictions[index]["error"]
        assert problem["instance"] == "urn:nsfwoid:request:" + response.headers["X-Request-Id"]
        assert problem["status"] >= 400 and problem["detail"]


async def test_base64_wrapped_in_lines_is_read_as_tf_serving_reads_it(client):
    """MIME's base64 (Python's encodebytes, `openssl base64`) breaks lines; TF-Serving's decoder skips whitespace."""
    plain = base64.b64encode(WARM).decode()
    wrapped = [base64.encodebytes(WARM).decode(), base64.encodebytes(WARM).decode().replace("\n", "\r\n"),
               f" {plain[:100]}\t{plain[100:]} "]
    assert all(text != plain and "".join(text.split()) == plain for text in wrapped)
    instances = [b64(WARM), *({"image": {"b64": text}} for text in wrapped),
                 {"image": {"b64": plain[:100] + "\n!" + plain[100:]}}]
    response = await client.post(PREDICT, json={"instances": instances})
    predictions = (await response.json())["predictions"]
    assert [p["score"] for p in predictions[1:4]] == [predictions[0]["score"]] * 3
    assert predictions[4]["error"]["type"] == problem_type("invalid-request")  # whitespace hides no other character


async def test_predictions_equal_the_score_route(client):
    raw = await client.post("/v1/score", data=WARM, headers={"Content-Type": "image/png", "Accept": "application/json"})
    single = await raw.json()
    (prediction,) = (await (await client.post(PREDICT, json={"instances": [b64(WARM)]})).json())["predictions"]
    assert set(prediction) == set(single)
    assert {k: prediction[k] for k in ("score", "sha1", "sha1_base36", "bytes", "frames", "model")} == {
        k: single[k] for k in ("score", "sha1", "sha1_base36", "bytes", "frames", "model")}


async def test_instances_are_batched_together(make_client):
    client = await make_client(max_batch=16, batch_wait_ms=0)

    async def batches():
        text = await (await client.get("/metrics")).text()
        return {k: float(line.split()[1]) for line in text.splitlines() for k in ("count", "sum")
                if line.startswith(f"nsfwoid_batch_size_{k} ")}

    before = await batches()
    instances = [b64(images.encode(images.photo(name, (200, 150)), "PNG")) for name in images.PHOTOS] * 2
    response = await client.post(PREDICT, json={"instances": instances})
    assert response.status == 200 and len((await response.json())["predictions"]) == 8
    after = await batches()
    assert after["sum"] - before["sum"] == 8
    assert after["count"] - before["count"] < 8  # fewer model runs than instances


@pytest.mark.parametrize("body", [b"{not json", b'"instances"', b"[]", b'{"instances": []}', b'{"instances": {}}',
                                  b'{"inputs": [1]}', b"\xff\xfe", b"[" * 100_000,
                                  b'{"instances": [{"url": ' + b"[" * 100_000 + b"]}"])
async def test_malformed_calls_are_refused(client, body):
    response = await client.post(PREDICT, data=body, headers={"Content-Type": "application/json"})
    await helpers.problem_of(response, 400, "invalid-request")


async def test_too_many_instances(make_client):
    client = await make_client(max_instances=3)
    response = await client.post(PREDICT, json={"instances": [b64(BRICK)] * 4})
    body = await helpers.problem_of(response, 400, "invalid-request")
    assert "at most 3" in body["detail"]
    assert (await client.post(PREDICT, json={"instances": [b64(BRICK)] * 3})).status == 200


async def test_an_oversized_instance_is_its_own_error(make_client):
    client = await make_client(max_image_bytes=10_000)
    response = await client.post(PREDICT, json={"instances": [b64(BRICK), b64(BRICK[:5000])]})
    first, second = (await response.json())["predictions"]
    assert first["error"]["type"] == problem_type("payload-too-large")
    assert 0 <= second["score"] <= 1  # a truncated JPEG under the cap is scored, as on POST /v1/score


async def test_each_instance_takes_a_scoring_slot(make_client, upstream):
    client = await make_client(max_inflight=2)
    slow = asyncio.create_task(client.post("/", data={"url": str(upstream.make_url("/slow").with_query(seconds="1"))}))
    await asyncio.sleep(0.3)
    response = await client.post(PREDICT, json={"instances": [b64(BRICK), b64(BRICK)]})
    await helpers.problem_of(response, 503, "overloaded")
    assert (await client.post(PREDICT, json={"instances": [b64(BRICK)]})).status == 200  # one slot is free
    assert (await slow).status == 200
    # Idle, a call with more instances than slots takes all of them and is scored.
    response = await client.post(PREDICT, json={"instances": [b64(BRICK)] * 3})
    assert response.status == 200 and len((await response.json())["predictions"]) == 3


async def test_a_url_instance_that_does_not_fit_in_image_memory_is_its_own_error(make_client, upstream):
    """The call holds three times its body; each URL instance its declared length on top (the cap when it declares
    none), from its headers until it is scored."""
    client = await make_client(max_image_bytes=2**20, image_memory=2**20 + 2**17)
    undeclared = str(upstream.make_url("/endless"))
    response = await client.post(PREDICT, json={"instances": [
        b64(BRICK), {"url": str(upstream.make_url("/image/brick.jpg"))}, {"url": undeclared}]})
    scored, downloaded, refused = (await response.json())["predictions"]
    assert 0 <= scored["score"] <= 1 and downloaded["score"] == scored["score"]
    assert refused["error"]["type"] == problem_type("overloaded")
    assert "1.0 MiB more do not fit" in refused["error"]["detail"]
    # Alone, the URL fits, and its download is read: to the cap, as it never ends.
    response = await client.post(PREDICT, json={"instances": [{"url": undeclared}]})
    assert (await response.json())["predictions"][0]["error"]["type"] == problem_type("payload-too-large")


@pytest.mark.parametrize("instance, name", [
    ({"url": 5}, "invalid-request"), ({"foo": 1}, "invalid-request"), ({"url": None}, "invalid-request"),
    ({"url": " "}, "missing-input"), ({"image": {"b64": ""}}, "missing-input"),
], ids=["url not a string", "unknown key", "url null", "url blank", "b64 empty"])
async def test_an_instance_of_an_unknown_shape_is_invalid_and_an_empty_one_missing(client, instance, name):
    """As docs/api.md says: a shape this route does not take is invalid-request; a known field left empty is
    missing-input."""
    response = await client.post(PREDICT, json={"instances": [instance]})
    (prediction,) = (await response.json())["predictions"]
    assert prediction["error"]["type"] == problem_type(name), prediction


async def test_a_call_with_more_structure_than_its_instances_need_is_refused_before_it_is_parsed(client):
    """{"instances": [{}, {}, …]} would build a dict for each {}: 25 MiB of them, about 700 MiB. A call has at
    most NSFWOID_MAX_INSTANCES small instances, so more objects, arrays or values than they need is refused."""
    body = b'{"instances": [' + b"{}, " * (6 * 2**20) + b"{}]}"
    response = await client.post(PREDICT, data=body, headers={"Content-Type": "application/json"})
    problem = await helpers.problem_of(response, 400, "invalid-request")
    assert "NSFWOID_MAX_INSTANCES" in problem["detail"]
    many_commas = {"instances": [{"url": "https://upload.wikimedia.org/a,b,c:d.jpg"}] * 50}  # the most it takes
    assert (await client.post(PREDICT, json=many_commas)).status == 200
