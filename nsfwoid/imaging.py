"""Image bytes → model tensors: tolerant decode, colour modes, sampled frames, Yahoo's reference preprocessing.

Blocking and CPU-bound: run it in the decode pool, never on the event loop.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import ImageTooLarge, InvalidImage, Problem, UnsupportedMediaType

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
RESIZE = 256
CROP = 224
CROP_OFFSET = (RESIZE - CROP) // 2
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# The fast path lets libjpeg decode at 1/2, 1/4 or 1/8 scale, but never below this size: twice the
# reference resize keeps scores close to the exact path (see README, "Fast decode").
DRAFT_SIZE = 2 * RESIZE
GREY_BAND_ROWS = 256
# What Pillow's decoders raise on damaged or hostile data. MemoryError and our own bugs are not here:
# they must surface, not turn into a 422.
DECODE_ERRORS = (OSError, EOFError, SyntaxError, ValueError, TypeError, IndexError, KeyError,
                 struct.error, zlib.error)


def configure_pillow(max_pixels: int) -> None:
    """Pillow's process-wide settings. The app and the CLI call this once, through scoring.running_scorer."""
    # Truncated uploads are scored, as Yahoo's classify_nsfw.py does, rather than refused.
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    # One limit: open_image refuses past it with our own message; Pillow itself refuses only past twice it.
    Image.MAX_IMAGE_PIXELS = max_pixels


@dataclass(frozen=True)
class Frames:
    """The model inputs of one image: one tensor per sampled frame, in frame order."""

    tensors: np.ndarray  # N×224×224×3 float32
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
              deadline: float | None = None) -> Frames:
    """Decode the sampled frames one at a time, each reduced to its 224×224 tensor before the next.

    A still is scored exactly as the reference does. A frame after the first that cannot be decoded
    (a truncated animation) ends the sampling at the last good frame. `deadline` is a time.monotonic()
    value; seeking through an animation counts against it.
    """
    image = open_image(data, max_pixels=max_pixels)
    count = _frame_count(image)
    if count == 1 and not exact:
        image.draft(None, (DRAFT_SIZE, DRAFT_SIZE))  # JPEG only; a no-op for other formats
    tensors, indices = [], []
    for index in sample_indices(count, max_frames):
        try:
            _seek(image, index, deadline)
            tensor = _frame_tensor(image, max_pixels)
        except Problem:
            raise
        except Image.DecompressionBombError as exc:  # a TIFF tile or page larger than its header said
            raise ImageTooLarge(str(exc)) from None
        except DECODE_ERRORS as exc:
            if not tensors:
                raise InvalidImage(f"cannot decode {image.format} image: {exc}") from None
            break
        tensors.append(tensor)
        indices.append(index)
    return Frames(np.stack(tensors), tuple(indices), count)


def to_tensor(data: bytes, *, max_pixels: int, exact: bool) -> np.ndarray:
    """The first frame's 224×224×3 BGR mean-subtracted float32 input, as the reference computes it."""
    return to_frames(data, max_pixels=max_pixels, exact=exact).tensors[0]


def _frame_count(image: Image.Image) -> int:
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except DECODE_ERRORS:  # a damaged frame table: what can be read is the first frame
        return 1


def _seek(image: Image.Image, index: int, deadline: float | None) -> None:
    """Frame by frame: GIF, APNG and WebP composite each frame on the ones before it."""
    while image.tell() < index:
        if deadline is not None and time.monotonic() > deadline:
            raise ImageTooLarge(f"decoding frame {index} of the animation took too long")
        image.seek(image.tell() + 1)


def _frame_tensor(image: Image.Image, max_pixels: int) -> np.ndarray:
    width, height = image.size  # TIFF pages each have their own size
    if width * height > max_pixels:
        raise ImageTooLarge(f"a {width}x{height} frame is over the limit of {max_pixels} pixels")
    return preprocess(to_rgb(image))


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Read the header only; refuse what is not an image or is too large before decoding pixels."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except UnidentifiedImageError:
        if looks_like_image(data):
            raise InvalidImage("the image header is damaged") from None
        raise UnsupportedMediaType(f"not an image, or not one of {', '.join(FORMATS)}") from None
    except DECODE_ERRORS as exc:
        raise InvalidImage(f"cannot read the image header: {exc}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} is over the limit of {max_pixels} pixels")
    return image


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
    """rint(value / 257), clipped: in bands of rows, so that no float64 copy of the whole picture is made."""
    values = np.asarray(image)
    scale = image.mode in SIXTEEN_BIT_MODES or values.max(initial=0) > 255
    eight_bits = np.empty(values.shape, dtype=np.uint8)
    for top in range(0, values.shape[0], GREY_BAND_ROWS):
        band = values[top:top + GREY_BAND_ROWS].astype(np.float64)
        if scale:
            band /= 257.0
        eight_bits[top:top + GREY_BAND_ROWS] = np.clip(np.rint(band), 0, 255)
    return eight_bits


def preprocess(rgb: Image.Image) -> np.ndarray:
    """Yahoo's classify_nsfw.py: 256×256 bilinear, JPEG round trip, centre crop 224, BGR minus mean."""
    return reference_tensor(reference_resize(rgb))


def reference_resize(rgb: Image.Image) -> Image.Image:
    return rgb.resize((RESIZE, RESIZE), Image.Resampling.BILINEAR)


def reference_tensor(resized: Image.Image) -> np.ndarray:
    """The steps after the resize: JPEG round trip, centre crop, BGR minus mean."""
    with io.BytesIO() as buffer:
        resized.save(buffer, format="JPEG")
        buffer.seek(0)
        with Image.open(buffer) as reencoded:
            end = CROP_OFFSET + CROP
            rgb_pixels = np.asarray(reencoded)[CROP_OFFSET:end, CROP_OFFSET:end]
    # Channel by channel: one strided reversal of all three channels costs three times as much.
    tensor = np.empty((CROP, CROP, 3), dtype=np.float32)
    for bgr_channel, rgb_channel in enumerate((2, 1, 0)):
        np.subtract(rgb_pixels[..., rgb_channel], MEAN_BGR[bgr_channel], out=tensor[..., bgr_channel], dtype=np.float32)
    return tensor
