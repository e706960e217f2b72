"""Image bytes → model tensors: tolerant decode, colour modes, sampled frames, Yahoo's reference preprocessing.

Blocking and CPU-bound: run it in the decode pool, never on the event loop.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import ImageTooLarge, InvalidImage, Problem, UnsupportedMediaType

# The one list of the formats nsfwoid reads: Pillow's name → the MIME types MediaWiki gives such files, and the
# file name suffixes `nsfwoid score` walks directories for. The extension's MIME list and the schemathesis hooks
# are checked against it (tests/test_imaging.py).
READ_FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "JPEG": (("image/jpeg",), (".jpg", ".jpeg", ".jpe")),
    "PNG": (("image/png",), (".png", ".apng")),
    "GIF": (("image/gif",), (".gif",)),
    "WEBP": (("image/webp",), (".webp",)),
    "TIFF": (("image/tiff",), (".tif", ".tiff")),
    "BMP": (("image/bmp", "image/x-bmp", "image/x-ms-bmp"), (".bmp",)),
}
FORMATS = tuple(READ_FORMATS)
SUFFIXES = frozenset(suffix for _, suffixes in READ_FORMATS.values() for suffix in suffixes)
RESIZE = 256
CROP = 224
CROP_OFFSET = (RESIZE - CROP) // 2
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# The fast path lets libjpeg decode at 1/2, 1/4 or 1/8 scale, but never below this size: twice the
# reference resize keeps scores close to the exact path (docs/performance.md, "Fast decode: fidelity").
DRAFT_SIZE = 2 * RESIZE
GREY_BAND_ROWS = 256
# A TIFF tile may be larger than its image (tiles are padded to multiples of 16), but not by this much:
# libtiff allocates a whole tile before decoding a pixel of it.
TILE_PIXELS_ALLOWED = 1 << 20
# libtiff holds an offset and a byte count for every strip or tile before decoding any: a one-pixel-wide image of
# one row per strip needs 16 bytes a row. Real files have a few thousand.
TIFF_CHUNKS_ALLOWED = 1 << 20
TIFF_STRIP_OFFSETS, TIFF_ROWS_PER_STRIP, TIFF_TILE_OFFSETS = 273, 278, 324
TIFF_TILE_WIDTH, TIFF_TILE_LENGTH = 322, 323
# Decoding an animation holds its canvas several times: RGBA canvases of the current and the previous frame
# (libwebp, Pillow's GIF and APNG compositing), Pillow's copy, and the RGB conversion.
ANIMATION_BYTES_PER_PIXEL = 4 * 3 + 3
# What Pillow's decoders raise on damaged or hostile data. MemoryError and our own bugs are not here:
# they must surface, not turn into a 422.
DECODE_ERRORS = (OSError, EOFError, SyntaxError, ValueError, TypeError, IndexError, KeyError,
                 struct.error, zlib.error)


def configure_pillow(max_pixels: int) -> None:
    """Pillow's process-wide settings. Each decode worker calls this as it starts (sandbox.DecodePool), for the
    app and the CLI alike."""
    # Truncated uploads are scored, as Yahoo's classify_nsfw.py does, rather than refused.
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    # One limit: open_image refuses past it with our own message; Pillow itself refuses only past twice it.
    Image.MAX_IMAGE_PIXELS = max_pixels


@dataclass(frozen=True)
class Frames:
    """The sampled frames of one image, in frame order, each as its 224×224 crop after Yahoo's preprocessing.

    The crops are uint8 RGB, a quarter of the float32 model input: cheap to send back from a decode worker.
    """

    crops: np.ndarray  # N×224×224×3 uint8 RGB
    indices: tuple[int, ...]
    count: int  # frames (or pages) in the whole image


def sample_indices(count: int, max_frames: int) -> list[int]:
    """Up to max_frames frame numbers spread evenly over count frames, always the first and the last."""
    if count <= max_frames:
        return list(range(count))
    if max_frames == 1:
        return [0]
    return sorted({round(i * (count - 1) / (max_frames - 1)) for i in range(max_frames)})


def to_frames(data: bytes, *, max_pixels: int, exact: bool, max_frames: int = 1,
              memory_budget: int | None = None) -> Frames:
    """Decode the sampled frames one at a time, each reduced to its 224×224 crop before the next.

    A still is scored exactly as the reference does. A frame after the first that cannot be decoded
    (a truncated animation) ends the sampling at the last good frame. Run it in a decode worker
    (sandbox.DecodePool), whose time limit bounds seeking through a long animation. `memory_budget`: the
    bytes that decoding may use; an animation whose canvas would need more is refused before decoding.
    """
    image = open_image(data, max_pixels=max_pixels)
    count = _frame_count(image)
    width, height = image.size
    if count > 1 and memory_budget is not None and width * height * ANIMATION_BYTES_PER_PIXEL > memory_budget:
        raise ImageTooLarge(f"decoding a {width}x{height} animation needs more memory than a decode worker has")
    if count == 1 and not exact:
        image.draft(None, (DRAFT_SIZE, DRAFT_SIZE))  # JPEG only; a no-op for other formats
    crops, indices = [], []
    for index in sample_indices(count, max_frames):
        try:
            _seek(image, index)
            crop = _frame_crop(image, max_pixels)
        except Problem:
            raise
        except Image.DecompressionBombError as exc:  # a TIFF tile or page larger than its header said
            raise ImageTooLarge(str(exc)) from None
        except DECODE_ERRORS as exc:
            if not crops:
                raise InvalidImage(f"cannot decode {image.format} image: {exc}") from None
            break
        crops.append(crop)
        indices.append(index)
    return Frames(np.stack(crops), tuple(indices), count)


def _frame_count(image: Image.Image) -> int:
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except DECODE_ERRORS:  # a damaged frame table: what can be read is the first frame
        return 1


def _seek(image: Image.Image, index: int) -> None:
    """Frame by frame: GIF, APNG and WebP composite each frame on the ones before it."""
    while image.tell() < index:
        image.seek(image.tell() + 1)


def _frame_crop(image: Image.Image, max_pixels: int) -> np.ndarray:
    width, height = image.size  # TIFF pages each have their own size
    if width * height > max_pixels:
        raise ImageTooLarge(f"a {width}x{height} frame is over the limit of {max_pixels} pixels")
    _check_tiff_layout(image)
    return reference_crop(reference_resize(to_rgb(image)))


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Read the header only; refuse what is not an image or is too large before decoding pixels."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except UnidentifiedImageError:
        if looks_like_image(data):
            raise InvalidImage("the image header is damaged") from None
        kind = other_format(data)
        what = f"{kind}, which is not one" if kind else "not an image, or not one"
        raise UnsupportedMediaType(f"{what} of {', '.join(FORMATS)}") from None
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"cannot read the image header: {exc}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} is over the limit of {max_pixels} pixels")
    _check_tiff_layout(image)
    return image


def _check_tiff_layout(image: Image.Image) -> None:
    """What libtiff allocates before decoding a pixel: one tile, and the tables of every strip or tile."""
    tags = getattr(image, "tag_v2", {})
    if not tags:
        return
    width, height = image.size
    tile_width, tile_length = tags.get(TIFF_TILE_WIDTH), tags.get(TIFF_TILE_LENGTH)
    if isinstance(tile_width, int) and isinstance(tile_length, int) and tile_width > 0 and tile_length > 0:
        if tile_width * tile_length > max(width * height, TILE_PIXELS_ALLOWED):
            raise ImageTooLarge(f"a {tile_width}x{tile_length} tile is far larger than its {width}x{height} image")
        chunks, kind = -(-width // tile_width) * -(-height // tile_length), "tiles"
    else:
        rows = tags.get(TIFF_ROWS_PER_STRIP)
        chunks, kind = -(-height // rows) if isinstance(rows, int) and rows > 0 else 1, "strips"
    declared = max(_entry_count(tags.get(TIFF_STRIP_OFFSETS)), _entry_count(tags.get(TIFF_TILE_OFFSETS)))
    if max(chunks, declared) > TIFF_CHUNKS_ALLOWED:
        raise ImageTooLarge(f"a {width}x{height} TIFF of {max(chunks, declared)} {kind} is over the limit of "
                            f"{TIFF_CHUNKS_ALLOWED}")


def _entry_count(value) -> int:
    """How many values a TIFF tag holds (Pillow gives a tuple for several, the value itself for one)."""
    return len(value) if isinstance(value, tuple) else int(value is not None)


# ISO base media files (HEIF and AVIF) by their brand, the bytes 8 to 12 after "ftyp" at 4 to 8.
ISOBMFF_BRANDS = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC",
                  b"heim": "HEIC", b"heis": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF"}
SIGNATURES = ((b"\xff\x0a", "JPEG XL"), (b"\x00\x00\x00\x0cJXL ", "JPEG XL"), (b"%PDF", "PDF"),
              (b"<svg", "SVG"), (b"<?xml", "XML (SVG?)"), (b"{", "JSON"), (b"[", "JSON"))


def other_format(data: bytes) -> str | None:
    """What the bytes are, where it is a format people send that nsfwoid does not read: "an AVIF image"."""
    if data[4:8] == b"ftyp" and data[8:12] in ISOBMFF_BRANDS:
        return f"an {ISOBMFF_BRANDS[data[8:12]]} image"
    start = data[:16].lstrip()
    return next((f"a {name} file" for signature, name in SIGNATURES if start.startswith(signature)), None)


def looks_like_image(data: bytes) -> bool:
    """Whether the bytes start with the signature of a format nsfwoid reads."""
    Image.init()
    prefix = data[:16]
    for fmt in FORMATS:
        accept = Image.OPEN[fmt][1]
        if accept is not None and accept(prefix):
            return True
    return False


def to_rgb(image: Image.Image) -> Image.Image:
    """The current frame, as 8-bit RGB. 16-bit and 32-bit greys are scaled to 8 bits, not clipped."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        image = Image.fromarray(_grey_to_eight_bits(image), mode="L")
    if image.mode == "RGB":
        image.load()  # convert() would decode and then copy the whole picture
        return image
    return image.convert("RGB")


def _grey_to_eight_bits(image: Image.Image) -> np.ndarray:
    """rint(value / 257), clipped, a band of rows at a time: no full-size copy of the picture, float or not."""
    width, height = image.size
    scale = image.mode in SIXTEEN_BIT_MODES or image.getextrema()[1] > 255
    eight_bits = np.empty((height, width), dtype=np.uint8)
    for top in range(0, height, GREY_BAND_ROWS):
        bottom = min(top + GREY_BAND_ROWS, height)
        band = np.asarray(image.crop((0, top, width, bottom)), dtype=np.float64)
        if scale:
            band /= 257.0
        eight_bits[top:bottom] = np.clip(np.rint(band), 0, 255)
    return eight_bits


def reference_resize(rgb: Image.Image) -> Image.Image:
    return rgb.resize((RESIZE, RESIZE), Image.Resampling.BILINEAR)


def reference_crop(resized: Image.Image) -> np.ndarray:
    """JPEG round trip, centre crop: 224×224×3 uint8 RGB."""
    with io.BytesIO() as buffer:
        resized.save(buffer, format="JPEG")
        buffer.seek(0)
        with Image.open(buffer) as reencoded:
            end = CROP_OFFSET + CROP
            return np.array(reencoded)[CROP_OFFSET:end, CROP_OFFSET:end]


def model_input(crops: np.ndarray) -> np.ndarray:
    """N×224×224×3 uint8 RGB crops → the model's N×224×224×3 float32 BGR input, minus the mean."""
    tensors = np.empty(crops.shape, dtype=np.float32)
    # Channel by channel: one strided reversal of all three channels costs three times as much.
    for bgr_channel, rgb_channel in enumerate((2, 1, 0)):
        np.subtract(crops[..., rgb_channel], MEAN_BGR[bgr_channel], out=tensors[..., bgr_channel], dtype=np.float32)
    return tensors
