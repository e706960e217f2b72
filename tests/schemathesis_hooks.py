"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.schemathesis_hooks): real images for the binary bodies.

The contract says a raw body is an image. Schemathesis cannot know what an image is from `format: binary`,
so it would send arbitrary bytes as "valid" data; these strategies send real photographs instead, in each
format nsfwoid reads.
"""

import base64

import schemathesis
from hypothesis import strategies as st

from nsfwoid.scoring.imaging import FORMATS
from tests import images

IMAGES = [images.encode(images.photo(name, (96, 72)), fmt)
          for name in ("brick.jpg", "warm_flat.png") for fmt in FORMATS]

for media_type in ("image/*", "application/octet-stream"):
    schemathesis.openapi.media_type(media_type, st.sampled_from(IMAGES))
# The multipart `file` field.
schemathesis.openapi.format("binary", st.sampled_from(IMAGES))
# Lift Wing's retired nsfw-model: an instance's image in base64.
schemathesis.openapi.format("image-base64", st.sampled_from([base64.b64encode(image).decode() for image in IMAGES]))
