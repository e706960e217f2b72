"""What an 8-frame animation costs against a still, in one run: decode + preprocessing and inference.

    cd benchmarks && ../.venv/bin/python frames.py     # about 30 seconds: frames.json

For each format, an 8-frame animation of 480×360 crops of the fidelity photographs is scored as the
service scores it (imaging.to_frames, then one model run of its frames), and so is its first frame
alone as a still of the same format. The ratio animation ÷ still is what the policy "every frame
counts" costs.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from common import PHOTOS
from PIL import Image

from nsfwoid.config import Settings
from nsfwoid.scoring import imaging
from nsfwoid.scoring.model import load_model

HERE = Path(__file__).resolve().parent
SIZE = (480, 360)
FRAMES = 8
REPEATS = 10
FORMATS = {"GIF": {}, "APNG": {"format": "PNG"}, "WebP": {"format": "WEBP", "quality": 80}, "TIFF": {}}


def encode(frames: list[Image.Image], name: str) -> bytes:
    options = {"format": name, **FORMATS[name]}
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:])
    buffer = io.BytesIO()
    frames[0].save(buffer, **options)
    return buffer.getvalue()


def frames_from_photos() -> list[Image.Image]:
    photos = [Image.open(p).convert("RGB") for p in PHOTOS]
    frames = []
    for i in range(FRAMES):
        photo = photos[i % len(photos)]
        w, h = photo.size
        x = (w - min(w, h)) * i // FRAMES
        frames.append(photo.crop((x, 0, x + min(w, h), min(w, h))).resize(SIZE, Image.Resampling.LANCZOS))
    return frames


def cost_ms(model, data: bytes, settings: Settings) -> dict:
    """Best of REPEATS: milliseconds of decode + preprocessing, and of the one model run of its frames."""
    decode, infer = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        frames = imaging.to_frames(data, max_pixels=settings.max_pixels, exact=settings.exact,
                                   max_frames=settings.max_frames)
        decoded = time.perf_counter()
        model.run(frames.tensors)
        decode.append(decoded - started)
        infer.append(time.perf_counter() - decoded)
    return {"frames": len(frames.indices), "decode_ms": round(min(decode) * 1000, 2),
            "inference_ms": round(min(infer) * 1000, 2), "total_ms": round((min(decode) + min(infer)) * 1000, 2)}


def main() -> None:
    settings = Settings()
    imaging.configure_pillow(settings.max_pixels)
    model = load_model(settings)
    frames = frames_from_photos()
    result = {}
    for name in FORMATS:
        still = cost_ms(model, encode(frames[:1], name), settings)
        animation = cost_ms(model, encode(frames, name), settings)
        result[name] = {"still": still, "animation": animation,
                        "animation_over_still": round(animation["total_ms"] / still["total_ms"], 2)}
        print(f"{name:5} still {still['total_ms']:7.1f} ms   8-frame animation {animation['total_ms']:7.1f} ms"
              f"   = {result[name]['animation_over_still']:.2f} × still", flush=True)
    (HERE / "frames.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
