"""Yahoo's reference steps, one image at a time, and the fixtures' reference scores, as the tests compare the
service with them."""

from __future__ import annotations

import numpy as np
from PIL import Image

from nsfwoid.scoring import imaging

from .images import FIDELITY


def expected_scores() -> dict[str, float]:
    lines = (FIDELITY / "expected.tsv").read_text().splitlines()[1:]
    return {name: float(score) for name, score in (line.split("\t") for line in lines if line)}


def fixture_tensors() -> np.ndarray:
    """The fidelity fixtures' exact-path model inputs, in the sorted order of their names."""
    return np.stack([to_tensor((FIDELITY / name).read_bytes(), max_pixels=10**9, exact=True)
                     for name in sorted(expected_scores())])


def fast_path_deviation(model, data: bytes, rng: np.random.Generator, draws: int = 8) -> dict:
    """How far the fast decode moves an image's score, beside the image's own sensitivity.

    The sensitivity is the largest score change when 1 % of the exact path's 256 px pixels move by one
    level, over `draws` random draws: no decode that is not bit-exact can promise less than that.
    """
    from nsfwoid.scoring import imaging

    fast = to_tensor(data, max_pixels=10**9, exact=False)
    exact_resized = imaging.reference_resize(imaging.to_rgb(imaging.open_image(data, max_pixels=10**9)))
    pixels = np.asarray(exact_resized, dtype=np.int16)
    noisy = []
    for _ in range(draws):
        step = rng.choice([-1, 1], size=pixels.shape) * (rng.random(pixels.shape) < 0.01)
        noisy.append(reference_tensor(Image.fromarray(np.clip(pixels + step, 0, 255).astype(np.uint8))))
    fast_score, exact_score, *noisy_scores = (float(s) for s in model.run(
        np.stack([fast, reference_tensor(exact_resized), *noisy])))
    return {"deviation": round(abs(fast_score - exact_score), 6), "exact_score": round(exact_score, 6),
            "sensitivity": round(max(abs(s - exact_score) for s in noisy_scores), 6)}


def reference_tensor(resized: Image.Image) -> np.ndarray:
    """The steps after the 256 px resize: JPEG round trip, centre crop, BGR minus mean."""
    return imaging.model_input(imaging.reference_crop(resized)[np.newaxis])[0]


def preprocess(rgb: Image.Image) -> np.ndarray:
    """Yahoo's classify_nsfw.py: 256×256 bilinear, JPEG round trip, centre crop 224, BGR minus mean."""
    return reference_tensor(imaging.reference_resize(rgb))


def to_tensor(data: bytes, *, max_pixels: int, exact: bool) -> np.ndarray:
    """The first frame's 224×224×3 BGR mean-subtracted float32 input, through the service's decode."""
    return imaging.model_input(imaging.to_frames(data, max_pixels=max_pixels, exact=exact).crops)[0]


async def score_one(batcher, tensor: np.ndarray) -> tuple[float, float]:
    """(NSFW probability, seconds of the model run that scored it), through the batcher."""
    (result,) = await batcher.score_many([tensor])
    return result
