"""Generates the high-scoring fixtures: abstract pictures (ellipses of colour on a smooth ground, nothing else) that
the fp32 model scores from 0.5 to 0.99, where filters set their thresholds. A reduced-precision run (bf16) is
checked against them for a bias where it matters (tests/test_bf16.py).

Each is grown from a seed by hill climbing towards a target score: of 24 random ellipses added to the picture,
the one that brings the score closest to the target is kept. Deterministic for a given model and seed:

    .venv/bin/python tests/data/high_scores/generate.py

writes target-*.png and scores.json (each file's fp32 score, through the service's exact decode) beside itself.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from nsfwoid.scoring import imaging  # noqa: E402
from nsfwoid.scoring.model import load_model  # noqa: E402
from tests.helpers import TEST_SETTINGS  # noqa: E402
from tests.reference import preprocess  # noqa: E402

TARGETS = (0.55, 0.65, 0.75, 0.85, 0.95, 0.99)
SIDE = 256
PROPOSALS = 24
STEPS = 400
CLOSE_ENOUGH = 0.01


def ground(rng: np.random.Generator) -> Image.Image:
    """A smooth field of colour: a few random colours, blurred together."""
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((SIDE, SIDE), Image.BICUBIC).filter(ImageFilter.GaussianBlur(8))


def with_ellipse(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out, "RGBA")
    x, y = rng.integers(0, SIDE, 2)
    w, h = rng.integers(8, SIDE // 2, 2)
    colour = (*(int(c) for c in rng.integers(0, 256, 3)), int(rng.integers(60, 200)))
    draw.ellipse((x - w, y - h, x + w, y + h), fill=colour)
    return out


def grow(model, target: float, seed: int) -> tuple[Image.Image, float]:
    rng = np.random.default_rng(seed)
    best = ground(rng)
    score = float(model.run(preprocess(best)[None])[0])
    for _ in range(STEPS):
        if abs(score - target) < CLOSE_ENOUGH:
            break
        proposals = [with_ellipse(best, rng) for _ in range(PROPOSALS)]
        scores = model.run(np.stack([preprocess(p) for p in proposals]))
        pick = int(np.argmin(np.abs(scores - target)))
        if abs(scores[pick] - target) < abs(score - target):
            best, score = proposals[pick], float(scores[pick])
    return best, score


def main() -> None:
    imaging.configure_pillow(TEST_SETTINGS.max_pixels)
    model = load_model(dataclasses.replace(TEST_SETTINGS, inference_threads=2))
    scores = {}
    for seed, target in enumerate(TARGETS):
        image, _ = grow(model, target, seed)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        name = f"target-{target:.2f}.png"
        (HERE / name).write_bytes(buffer.getvalue())
        crops = imaging.to_frames(buffer.getvalue(), max_pixels=TEST_SETTINGS.max_pixels, exact=True).crops
        scores[name] = round(float(model.run(imaging.model_input(crops))[0]), 6)
        print(name, scores[name], flush=True)
    (HERE / "scores.json").write_text(json.dumps(scores, indent=1) + "\n")


if __name__ == "__main__":
    main()
