"""Real test images: the fidelity photographs, re-encoded in every format and mode Commons holds."""

from __future__ import annotations

import io
import struct
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
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def animation(frames: list[Image.Image], fmt: str) -> bytes:
    """An animation (GIF, PNG as APNG, WEBP) or a multi-page TIFF of the given frames, as Pillow writes it."""
    first, *rest = frames
    options = {"duration": 100, "loop": 0} if fmt in ("GIF", "PNG", "WEBP") else {}
    if fmt == "WEBP":
        options["lossless"] = True
    return encode(first, fmt, save_all=True, append_images=rest, **options)


def decoded_frames(data: bytes) -> list[Image.Image]:
    """Every composited frame of an animation as a viewer shows it, decoded by Pillow, as RGB stills."""
    stills = []
    with Image.open(io.BytesIO(data)) as image:
        for index in range(image.n_frames):
            image.seek(index)
            stills.append(image.convert("RGB"))
    return stills


def many_frame_gif(first: Image.Image, count: int) -> bytes:
    """A GIF of `count` frames: `first`, then count − 1 one-pixel frames drawn on it, each its own block.

    Written by hand: Pillow's GIF writer needs minutes for ten thousand frames.
    """
    single = encode(first.convert("P", palette=Image.Palette.ADAPTIVE), "GIF")
    assert single.endswith(b";")
    width, height = first.size
    blocks = []
    for index in range(1, count):
        x, y, colour = index % width, (index // width) % height, index % 256
        control = b"\x21\xf9\x04\x04" + struct.pack("<H", 2) + b"\x00\x00"  # keep the frame, 20 ms
        descriptor = b"," + struct.pack("<HHHH", x, y, 1, 1) + b"\x00"
        # LZW with 8-bit codes: clear (256), the pixel, end (257), packed as 9-bit codes.
        codes = (256 | (colour << 9) | (257 << 18)).to_bytes(4, "little")
        blocks.append(control + descriptor + b"\x08\x04" + codes + b"\x00")
    return single[:-1] + b"".join(blocks) + b";"
