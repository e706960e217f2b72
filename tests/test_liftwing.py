"""Lift Wing's retired nsfw-model, as its former clients call it: the same requests, answers and 400 reasons."""

import base64

import pytest

from nsfwoid.http.liftwing import BAD_PADDING, NOT_AN_IMAGE, NOT_THE_FORMAT

from . import helpers, images, reference

PREDICT = "/v1/models/nsfw-model:predict"
BRICK = (images.FIDELITY / "brick.jpg").read_bytes()


instance = helpers.b64_instance


async def test_the_first_instance_is_scored_by_open_nsfw_in_the_retired_shape(client):
    # The other instances are not scored, as the retired model did not score them: not even decoded.
    response = await client.post(PREDICT, json={"instances": [instance(BRICK), {"image": {"b64": "not an image"}}]})
    assert response.status == 200 and response.content_type == "application/json"
    answer = await response.json()
    assert set(answer) == {"prob_nsfw", "prob_sfw"}
    assert answer["prob_nsfw"] == pytest.approx(reference.expected_scores()["brick.jpg"], abs=0.005)
    assert answer["prob_sfw"] == pytest.approx(1 - answer["prob_nsfw"], abs=1e-12)
    # The same image through the service's own route: the same open_nsfw score.
    own = await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg"})
    assert float(await own.text()) == pytest.approx(answer["prob_nsfw"], abs=1e-9)


async def test_base64_is_read_as_the_retired_model_read_it(client):
    """Not validated: line breaks and other characters outside the alphabet are skipped."""
    encoded = base64.encodebytes(BRICK).decode()  # wrapped in lines of 76
    response = await client.post(PREDICT, json={"instances": [{"image": {"b64": encoded + "!"}}]})
    assert response.status == 200


async def test_url_safe_base64_is_decoded_not_skipped(client):
    """The URL-safe alphabet's - and _ stand for + and /: skipping them, as characters outside the alphabet are,
    would score corrupted bytes."""
    standard = base64.b64encode(BRICK).decode()
    url_safe = base64.urlsafe_b64encode(BRICK).decode()
    assert url_safe != standard  # the photo's base64 has + and /
    scores = []
    for encoded in (standard, url_safe):
        response = await client.post(PREDICT, json={"instances": [{"image": {"b64": encoded}}]})
        scores.append((await response.json())["prob_nsfw"])
    assert scores[1] == pytest.approx(scores[0], abs=1e-9)


@pytest.mark.parametrize("body, reason", [
    ({}, NOT_THE_FORMAT),
    ({"instances": []}, NOT_THE_FORMAT),
    ({"instances": "abc"}, NOT_THE_FORMAT),
    ([1, 2], NOT_THE_FORMAT),
    ({"instances": [{"url": "https://upload.wikimedia.org/a.jpg"}]}, NOT_THE_FORMAT),  # no URLs, as before
    ({"instances": [{"image": "abc"}]}, NOT_THE_FORMAT),
    ({"instances": [{"image": {"b64": 12}}]}, NOT_THE_FORMAT),
    ({"instances": [instance(BRICK), "not an instance"]}, NOT_THE_FORMAT),  # where the retired model differed
    ({"instances": [{"image": {"b64": "abc"}}]}, BAD_PADDING),
    ({"instances": [instance(b"hello, world")]}, NOT_AN_IMAGE),
    ({"instances": [instance(b"")]}, NOT_AN_IMAGE),
    ({"instances": [instance(b"\xff\xd8\xff\xe0" + b"\0" * 64)]}, NOT_AN_IMAGE),
])
async def test_bad_inputs_get_the_retired_models_400_and_reason(client, body, reason):
    response = await client.post(PREDICT, json=body)
    problem = await helpers.problem_of(response, 400, "invalid-request")
    assert problem["detail"] == reason and response.reason == reason
