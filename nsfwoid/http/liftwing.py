"""Lift Wing's retired `nsfw-model`, served as an alias of open_nsfw, so that its former clients need no change.

Until 2025 Lift Wing served `POST /v1/models/nsfw-model:predict`: it took `{"instances": [{"image": {"b64":
"…"}}]}`, scored the first instance with a MobileNet, and answered `{"prob_nsfw": p, "prob_sfw": 1 - p}`. Here
the same request gets the same shape of answer, and the same bad inputs the same 400 and reason (as the
problem's `detail`, and as the status line's reason phrase, where Lift Wing's tornado put it). The score is
open_nsfw's, not the MobileNet's. One difference: the instances after the first must have its shape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii

from aiohttp import web

from ..config import Settings
from ..errors import InvalidImage, InvalidRequest, UnsupportedMediaType
from . import intake
from .answers import json_response
from .intake import expect_continue
from .kserve import instances_of, parse_call, readiness
from .state import RUNTIME, SETTINGS

ALIAS = "nsfw-model"
MODEL_PATH = f"/v1/models/{ALIAS}"
# The retired model's reasons, word for word.
NOT_THE_FORMAT = ('Input data should have the following format: {"instances": [{"image": {"b64": '
                  '"<base64 encoded string>"}}]}')
BAD_PADDING = "Base64 encoded string is incorrectly padded."
NOT_AN_IMAGE = "Image cannot be opened and identified."


class RetiredModelRefusal(InvalidRequest):
    """invalid-request (400), with the retired model's reason as the detail and the reason phrase."""

    def reason_phrase(self) -> str:
        return self.detail


def add_liftwing_routes(app: web.Application) -> None:
    app.router.add_get(MODEL_PATH, model_ready)
    app.router.add_post(MODEL_PATH + ":predict", predict, expect_handler=expect_continue)


async def model_ready(request: web.Request) -> web.Response:
    return readiness(request, ALIAS)


async def predict(request: web.Request) -> web.Response:
    pipeline = request.app[RUNTIME].pipeline
    settings = request.app[SETTINGS]
    async with intake.json_call(request) as body:
        payload = await asyncio.to_thread(parse_call, body, settings.max_instances)
        data = await first_image(payload, settings)
        async with intake.admitted(request, 1) as deadline:
            try:
                scored = await pipeline.score(data, source="body", deadline=deadline)
            except (UnsupportedMediaType, InvalidImage):
                raise RetiredModelRefusal(NOT_AN_IMAGE) from None
    return json_response({"prob_nsfw": scored.score, "prob_sfw": 1 - scored.score})


async def first_image(payload: object, settings: Settings) -> bytes:
    """The first instance's image bytes. The others are not scored, as the retired model did not score them,
    but must have the same shape (the retired model did not look at them: the one way in which it differs)."""
    instances = instances_of(payload)
    if instances is None or not all(map(_has_the_shape, instances)):
        raise RetiredModelRefusal(NOT_THE_FORMAT)
    encoded = instances[0]["image"]["b64"]
    # Not validated, as the retired model did not: characters outside base64's alphabet are skipped. But the
    # URL-safe alphabet's - and _ are decoded as what they stand for, not skipped: skipping them scored
    # corrupted bytes.
    decode = base64.urlsafe_b64decode if "-" in encoded or "_" in encoded else base64.b64decode
    try:
        data = await asyncio.to_thread(decode, encoded)
    except binascii.Error:
        raise RetiredModelRefusal(BAD_PADDING) from None
    except ValueError:  # characters that are not ASCII
        raise RetiredModelRefusal(NOT_THE_FORMAT) from None
    return intake.capped(data, settings)


def _has_the_shape(instance: object) -> bool:
    """`{"image": {"b64": "…"}}`."""
    image = instance.get("image") if isinstance(instance, dict) else None
    return isinstance(image, dict) and isinstance(image.get("b64"), str)
