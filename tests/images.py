"""Real test images: the fidelity photographs, re-encoded in every format and mode Commons holds."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).parent / "data"
FIDELITY = DATA / "fidelity"
PHOTOS = ("retina.jpg", "motorcycle.webp", "grass_1600.jpg", "brick.jpg")


def expected_scores() -> dict[str, float]:
    lines = (FIDELITY / "expected.tsv").read_text().splitlines()[1:]
    return {name: float(score) for name, score in (line.split("\t") for line in lines if line)}


def photo(name: str = "retina.jpg", size: tuple[int, int] | None = None) -> Image.Image:
    with Image.open(FIDELITY / name) as image:
        rgb = image.convert("RGB")
    return rgb.resize(size, Image.Resampling.LANCZOS) if size else rgb


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def sixteen_bit_grey_png(grey: Image.Image) -> bytes:
    """A 16-bit greyscale PNG whose values are exactly 257 × the 8-bit ones."""
    values = np.asarray(grey, dtype=np.uint16) * 257
    return encode(Image.fromarray(values), "PNG")


def animated_gif(first: Image.Image, second: Image.Image) -> bytes:
    return encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def multipage_tiff(first: Image.Image, second: Image.Image) -> bytes:
    return encode(first, "TIFF", save_all=True, append_images=[second])


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG signature and IHDR declaring width×height, with no pixel data to speak of."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
