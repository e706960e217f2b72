"""Image bytes → model tensor: tolerant decode, colour modes, first frame, Yahoo's reference preprocessing.

Blocking and CPU-bound: run it in the decode thread pool, never on the event loop.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import ImageTooLarge, InvalidImage, Problem, UnsupportedMediaType

# Truncated uploads are scored, as Yahoo's classify_nsfw.py does, rather than refused.
ImageFile.LOAD_TRUNCATED_IMAGES = True

FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
RESIZE = 256
CROP = 224
CROP_OFFSET = (RESIZE - CROP) // 2
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# The fast path lets libjpeg decode at 1/2, 1/4 or 1/8 scale, but never below this size: twice the
# reference resize keeps scores close to the exact path (see README, "Fast decode").
DRAFT_SIZE = 2 * RESIZE


def to_tensor(data: bytes, *, max_pixels: int, exact: bool) -> np.ndarray:
    """Decode image bytes into the model's 224×224×3 BGR mean-subtracted float32 input."""
    image = open_image(data, max_pixels=max_pixels)
    try:
        if not exact:
            image.draft(None, (DRAFT_SIZE, DRAFT_SIZE))  # JPEG only; a no-op for other formats
        return preprocess(to_rgb(image))
    except Problem:
        raise
    except Exception as exc:  # Pillow's decoders raise many kinds; all mean "cannot decode"
        raise InvalidImage(f"cannot decode {image.format} image: {exc}") from None


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Read the header only; refuse what is not an image or is too large before decoding pixels."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    except UnidentifiedImageError:
        if _has_supported_signature(data):
            raise InvalidImage("the image header is damaged") from None
        raise UnsupportedMediaType(f"not an image, or not one of {', '.join(FORMATS)}") from None
    except Exception as exc:
        raise InvalidImage(f"cannot read the image header: {exc}") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(f"{width}x{height} is over the limit of {max_pixels} pixels")
    return image


def _has_supported_signature(data: bytes) -> bool:
    Image.init()
    prefix = data[:16]
    for fmt in FORMATS:
        accept = Image.OPEN[fmt][1]
        if accept is not None and accept(prefix):
            return True
    return False


def to_rgb(image: Image.Image) -> Image.Image:
    """First frame, as 8-bit RGB. 16-bit and 32-bit greys are scaled to 8 bits, not clipped."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode in SIXTEEN_BIT_MODES or values.max(initial=0) > 255:
            values = values / 257.0
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    if image.mode == "RGB":
        image.load()  # convert() would decode and then copy the whole picture
        return image
    return image.convert("RGB")


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
