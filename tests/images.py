"""Real test images: the fidelity photographs, re-encoded in every format and mode Commons holds, and
hostile files built byte by byte."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).parent / "data"


FIDELITY = DATA / "fidelity"


PHOTOS = ("retina.jpg", "motorcycle.webp", "grass_1600.jpg", "brick.jpg")


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


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG signature and IHDR declaring width×height, with no pixel data to speak of."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


TiffPage = tuple[int, int, dict[int, tuple[int, object]]]  # width, height, extra tags


def tiff(*pages: TiffPage, data: bytes = b"\0" * 64) -> bytes:
    """A little-endian TIFF of 8-bit grey pages, each (width, height, extra tags {tag: (type, value)}) with
    3: SHORT, 4: LONG, count 1, and the value "DATA" for the offset of `data`, which the pages share."""
    ifds, offset = [], 8
    for width, height, tags in pages:
        entries = {256: (4, width), 257: (4, height), 258: (3, 8), 259: (3, 1), 262: (3, 1), 277: (3, 1), **tags}
        ifds.append(entries)
        offset += 2 + 12 * len(entries) + 4
    data_offset, out, ifd_offset = offset, b"II*\0" + struct.pack("<I", 8), 8
    for number, entries in enumerate(ifds):
        ifd_offset += 2 + 12 * len(entries) + 4
        out += struct.pack("<H", len(entries))
        for tag, (kind, value) in sorted(entries.items()):
            value = data_offset if value == "DATA" else value
            packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
            out += struct.pack("<HHI", tag, kind, 1) + packed
        out += struct.pack("<I", ifd_offset if number + 1 < len(ifds) else 0)
    return out + data


HUGE_TILE: TiffPage = (16, 16, {259: (3, 8), 322: (4, 32768), 323: (4, 32768), 324: (4, "DATA"), 325: (4, 64)})


def huge_tile_tiff() -> bytes:
    """A 16×16 deflated TIFF whose one tile is 32768×32768: libtiff's buffer is 1 GiB, for 200 bytes."""
    return tiff(HUGE_TILE)


def many_strip_tiff(strips: int = 8_000_000) -> bytes:
    """A one-pixel-wide TIFF of one row per strip: 8 million strips in 200 bytes."""
    return tiff((1, strips, {278: (4, 1), 273: (4, "DATA"), 279: (4, 64)}))


def gzip_bomb(expanded: int = 1 << 30) -> bytes:
    """A gzip stream of zeros: about a megabyte that expands to a gibibyte."""
    compressor, zeros = zlib.compressobj(9, zlib.DEFLATED, 31), bytes(1 << 20)
    return b"".join([*(compressor.compress(zeros) for _ in range(expanded >> 20)), compressor.flush()])


def large_canvas_webp(side: int = 7000) -> bytes:
    """A two-frame animated WebP of side × side: a few hundred bytes, hundreds of megabytes to decode."""
    frames = [Image.new("RGB", (side, side), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], lossless=True, quality=0, method=0)
    return buffer.getvalue()


def slow_gif(frames: int = 40_000) -> bytes:
    """A GIF whose last frames take many seconds to reach: 4.6 s per 10,000 frames of 512×512, measured here."""
    return many_frame_gif(photo("brick.jpg", (512, 512)), frames)


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


def png_with_text(data: bytes, text: bytes) -> bytes:
    """The same PNG, pixel for pixel, with a tEXt chunk after IHDR: other bytes, other SHA-1, same score."""
    return data[:33] + png_chunk(b"tEXt", b"Comment\0" + text) + data[33:]
