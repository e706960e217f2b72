"""Decode and preprocessing: every format and mode Commons has, truncation, bombs, hostile bytes."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from nsfwoid.errors import ImageTooLarge, InvalidImage, Problem, UnsupportedMediaType
from nsfwoid.scoring import imaging

from . import images, reference

LIMIT = 50_000_000
BASE = images.photo("motorcycle.webp", (400, 300))
OTHER = images.photo("grass_1600.jpg", (400, 300))


def tensor(data: bytes, exact: bool = True) -> np.ndarray:
    return reference.to_tensor(data, max_pixels=LIMIT, exact=exact)


def reference_input(image: Image.Image) -> np.ndarray:
    return reference.preprocess(image.convert("RGB"))


FORMATS = {
    "jpeg-baseline": lambda: images.encode(BASE, "JPEG", quality=90),
    "jpeg-progressive": lambda: images.encode(BASE, "JPEG", quality=90, progressive=True),
    "jpeg-grayscale": lambda: images.encode(BASE.convert("L"), "JPEG"),
    "jpeg-cmyk": lambda: images.encode(BASE.convert("CMYK"), "JPEG"),
    "png-palette": lambda: images.encode(BASE.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
    "png-1bit": lambda: images.encode(BASE.convert("1"), "PNG"),
    "png-16bit": lambda: images.sixteen_bit_grey_png(BASE.convert("L")),
    "png-rgba": lambda: images.encode(BASE.convert("RGBA"), "PNG"),
    "gif-animated": lambda: images.animated_gif(BASE, OTHER),
    "webp": lambda: images.encode(BASE, "WEBP", quality=90),
    "webp-lossless": lambda: images.encode(BASE, "WEBP", lossless=True),
    "tiff-multipage": lambda: images.multipage_tiff(BASE, OTHER),
    "bmp": lambda: images.encode(BASE, "BMP"),
}


@pytest.mark.parametrize("kind", sorted(FORMATS))
@pytest.mark.parametrize("exact", [True, False])
def test_every_format_is_scored(model, kind, exact):
    result = tensor(FORMATS[kind](), exact=exact)
    assert result.shape == (224, 224, 3) and result.dtype == np.float32
    assert np.isfinite(result).all() and result.std() > 1  # a picture, not a flat fill
    (score,) = model.run(result[None])
    assert 0.0 <= score <= 1.0


@pytest.mark.parametrize("kind, first", [("gif-animated", "gif"), ("tiff-multipage", "tiff")])
def test_first_frame_or_page_is_used(kind, first):
    single = images.encode(BASE.convert("P", palette=Image.Palette.ADAPTIVE) if first == "gif" else BASE, first)
    only_second = images.encode(OTHER, first)
    multi = tensor(FORMATS[kind]())
    assert np.array_equal(multi, tensor(single))
    assert not np.array_equal(multi, tensor(only_second))


def test_sixteen_bit_is_scaled_not_clipped():
    grey = BASE.convert("L")
    sixteen = tensor(images.sixteen_bit_grey_png(grey))
    assert np.array_equal(sixteen, reference_input(grey))
    # Pillow's own convert("RGB") of I;16 clips to white: make sure we are not doing that.
    assert sixteen.std() > 10


def test_sixteen_bit_mode_is_what_pillow_gives():
    with Image.open(io.BytesIO(images.sixteen_bit_grey_png(BASE.convert("L")))) as image:
        assert image.mode in imaging.SIXTEEN_BIT_MODES


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF"])
def test_truncated_files_are_scored(model, fmt):
    whole = images.encode(BASE, fmt)
    cut = whole[: int(len(whole) * 0.6)]
    result = tensor(cut)
    assert result.shape == (224, 224, 3)
    (score,) = model.run(result[None])
    assert 0.0 <= score <= 1.0


def test_truncated_webp_is_a_clear_error():
    # libwebp decodes whole files only, so Pillow cannot read a truncated WebP even tolerantly.
    whole = images.encode(BASE, "WEBP")
    with pytest.raises(InvalidImage):
        tensor(whole[: len(whole) // 2])


def test_truncated_fixture_decodes_like_the_reference(model):
    data = (images.FIDELITY / "motorcycle_truncated_60.jpg").read_bytes()
    (score,) = model.run(tensor(data)[None])
    assert score == pytest.approx(reference.expected_scores()["motorcycle_truncated_60.jpg"], abs=1e-4)


def test_bomb_is_refused_from_the_header():
    bomb = images.bomb_png(100_000, 100_000)
    assert len(bomb) < 200
    with pytest.raises(ImageTooLarge, match="pixels"):
        tensor(bomb)


@pytest.mark.parametrize("data, why", [
    (images.huge_tile_tiff(), "tile is far larger"),
    (images.many_strip_tiff(), "8000000 strips"),
    (images.tiff((16, 16, {273: (4, "DATA"), 279: (4, 64)}), images.HUGE_TILE), "tile is far larger"),
], ids=["huge tile", "8 million strips", "huge tile on page 2"])
def test_tiff_layouts_that_make_libtiff_allocate_are_refused_before_decoding(data, why):
    with pytest.raises(ImageTooLarge, match=why):
        imaging.to_frames(data, max_pixels=50_000_000, exact=True, max_frames=2)


def test_pixel_limit_is_configurable():
    data = images.encode(BASE, "PNG")
    with pytest.raises(ImageTooLarge):
        reference.to_tensor(data, max_pixels=400 * 300 - 1, exact=True)
    assert reference.to_tensor(data, max_pixels=400 * 300, exact=True).shape == (224, 224, 3)


@pytest.mark.parametrize("data", [b"", b"hello, world", b"<html></html>", b"%PDF-1.4\n"])
def test_non_images_are_unsupported(data):
    with pytest.raises(UnsupportedMediaType):
        tensor(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_damaged_header_is_invalid(fmt):
    data = images.encode(BASE, fmt)
    with pytest.raises(InvalidImage):
        tensor(data[:20])


def test_preprocess_is_bit_identical_to_the_reference_steps():
    """A literal transcription of classify_nsfw.py's steps, against the optimised preprocess."""
    for name in images.PHOTOS:
        rgb = images.photo(name, (500, 375))
        resized = rgb.resize((256, 256), Image.Resampling.BILINEAR)
        reencoded = Image.open(io.BytesIO(images.encode(resized, "JPEG")))
        pixels = np.asarray(reencoded, dtype=np.float32)[16:240, 16:240, :]
        expected = pixels[:, :, ::-1] - np.array([104, 117, 123], dtype=np.float32)
        actual = reference.preprocess(rgb)
        assert actual.dtype == np.float32 and actual.flags.c_contiguous
        np.testing.assert_array_equal(actual, expected)


def test_fast_path_stays_close_to_exact_on_photos(model):
    for name in images.PHOTOS[1:]:
        data = images.encode(images.photo(name, (4000, 3000)), "JPEG", quality=90)
        fast, exact = model.run(np.stack([tensor(data, exact=False), tensor(data, exact=True)]))
        assert abs(fast - exact) <= 0.005, name


def _mutations():
    seeds = [images.encode(BASE.resize((64, 48)), fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")]
    return st.tuples(
        st.sampled_from(seeds),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=12),
        st.integers(0, 10_000),
    )


# Pillow warns about the corrupt EXIF and TIFF tags that mutations make; the warnings are expected here.
@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_mutated_images_raise_only_our_errors(case):
    seed, edits, cut = case
    data = bytearray(seed)
    for position, value in edits:
        data[position % len(data)] = value
    try:
        result = tensor(bytes(data[: max(cut, 8)]), exact=False)
    except Problem:
        return
    assert result.shape == (224, 224, 3) and np.isfinite(result).all()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_our_errors(data):
    try:
        tensor(data)
    except Problem:
        pass


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_deep_greys_convert_in_bands_without_a_float64_copy(mode):
    import tracemalloc

    rng = np.random.default_rng(1)
    height, width = 2000, 3000
    top = 65535 if mode != "F" else 70000.0
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    values = rng.integers(0, top, size=(height, width)).astype(dtype)
    image = Image.fromarray(values, mode=mode) if mode != "I;16" else Image.fromarray(values)
    assert image.mode == mode
    # What the conversion must equal: the whole-picture float64 formula it replaces.
    expected = np.clip(np.rint(values.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
    tracemalloc.start()
    try:
        converted = imaging.to_rgb(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(np.asarray(converted)[..., 0], expected)
    # One native-width copy of the values, the 8-bit result and a band: far under one float64 copy (48 MB).
    assert peak < values.nbytes + height * width * 4 + 8 * 1024 * 1024, peak


def test_every_list_of_formats_read_is_the_one_in_imaging():
    """The MediaWiki extension sends only what the service reads, `nsfwoid score` walks for it, and the contract
    test sends each of them."""
    import re
    from pathlib import Path

    from nsfwoid.batch import targets

    from . import schemathesis_hooks

    php = (Path(__file__).parents[1] / "mediawiki" / "Nsfwoid" / "includes" / "FileScorer.php").read_text()
    listed = re.search(r"MIME_TYPES = \[(.*?)\];", php, re.S).group(1)
    mime_types = {mime for mimes, _ in imaging.READ_FORMATS.values() for mime in mimes}
    assert set(re.findall(r"'([^']+)'", listed)) == mime_types
    assert schemathesis_hooks.FORMATS == imaging.FORMATS
    assert targets.SUFFIXES is imaging.SUFFIXES and {".jpg", ".png", ".tiff", ".webp"} <= imaging.SUFFIXES
    for name, (mimes, suffixes) in imaging.READ_FORMATS.items():
        assert imaging.looks_like_image(images.encode(images.photo("brick.jpg", (32, 24)), name)), name
        assert mimes and suffixes, name
