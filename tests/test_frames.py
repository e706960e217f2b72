"""Every frame counts: animations and multi-page files are scored on their sampled frames, highest wins."""

import itertools
import json
import subprocess
import sys
import time

import pytest

from nsfwoid.errors import PROBLEM_CONTENT_TYPE, ImageTooLarge
from nsfwoid.scoring import imaging

from . import images, reference

SIZE = (320, 240)
# brick and grass score about 0.005 and 0.003; warm_flat about 0.29: the explicit frame stands in.
LOW, OTHER_LOW, HIGH = "brick.jpg", "grass_1600.jpg", "warm_flat.png"
SEQUENCE = [LOW, OTHER_LOW, HIGH, LOW]
FORMATS = ["GIF", "PNG", "WEBP", "TIFF"]  # PNG with several frames is APNG
JSON = {"Accept": "application/json"}


def clean_first_animation(fmt: str) -> bytes:
    return images.animation([images.photo(name, SIZE) for name in SEQUENCE], fmt)


async def score_json(client, data: bytes) -> dict:
    response = await client.post("/", data=data, headers={"Content-Type": "application/octet-stream", **JSON})
    assert response.status == 200, await response.text()
    return await response.json()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_clean_first_frame_does_not_hide_a_later_one(make_client, fmt):
    client = await make_client(exact=True)
    data = clean_first_animation(fmt)
    stills = [(await score_json(client, images.encode(frame, "PNG")))["score"]
              for frame in images.decoded_frames(data)]
    body = await score_json(client, data)
    assert body["frames"]["count"] == len(SEQUENCE)
    assert [f["index"] for f in body["frames"]["scored"]] == [0, 1, 2, 3]
    for frame, still in zip(body["frames"]["scored"], stills, strict=True):
        assert frame["score"] == pytest.approx(still, abs=1e-4)
    assert body["score"] == pytest.approx(max(stills), abs=1e-4)
    assert body["score"] == max(f["score"] for f in body["frames"]["scored"])
    assert stills[0] < 0.05 < 0.2 < body["score"]  # the first frame alone would have passed as harmless
    text = await client.post("/", data=data, headers={"Content-Type": "image/" + fmt.lower()})
    assert float(await text.text()) == body["score"]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_max_frames_one_is_the_reference_behaviour(make_client, fmt):
    client = await make_client(exact=True, max_frames=1)
    data = clean_first_animation(fmt)
    first = (await score_json(client, images.encode(images.decoded_frames(data)[0], "PNG")))["score"]
    body = await score_json(client, data)
    assert body["frames"] == {"count": len(SEQUENCE), "scored": [{"index": 0, "score": body["score"]}]}
    assert body["score"] == pytest.approx(first, abs=1e-4) and body["score"] < 0.05


async def test_a_still_has_one_frame_and_scores_as_before(make_client, model):
    client = await make_client(exact=True)
    data = (images.FIDELITY / HIGH).read_bytes()
    body = await score_json(client, data)
    assert body["frames"] == {"count": 1, "scored": [{"index": 0, "score": body["score"]}]}
    assert body["score"] == pytest.approx(reference.expected_scores()[HIGH], abs=1e-4)


@pytest.mark.parametrize(("count", "limit", "expected"), [
    (1, 8, [0]), (4, 8, [0, 1, 2, 3]), (8, 8, list(range(8))), (10_000, 1, [0]), (5, 2, [0, 4]),
    (9, 5, [0, 2, 4, 6, 8]), (20, 8, [0, 3, 5, 8, 11, 14, 16, 19]),
])
def test_sampled_frames_are_spread_evenly_first_and_last_included(count, limit, expected):
    assert imaging.sample_indices(count, limit) == expected


def test_many_frames_are_sampled_spread_evenly():
    indices = imaging.sample_indices(10_000, 8)
    assert len(indices) == 8 and indices[0] == 0 and indices[-1] == 9_999
    gaps = [b - a for a, b in itertools.pairwise(indices)]
    assert max(gaps) - min(gaps) <= 1


async def test_frames_of_one_image_share_model_runs(make_client):
    client = await make_client(exact=True, max_batch=16, batch_wait_ms=0)
    frames = [images.photo(name, SIZE) for name in (LOW, OTHER_LOW, HIGH)] * 4  # 12 frames
    before = await batch_sizes(client)
    body = await score_json(client, images.animation(frames, "TIFF"))
    after = await batch_sizes(client)
    assert len(body["frames"]["scored"]) == 8
    # Eight frames queued at once go through in one model run, even without any batch wait.
    assert after["count"] - before["count"] == 1 and after["sum"] - before["sum"] == 8


async def batch_sizes(client) -> dict:
    text = await (await client.get("/metrics")).text()
    values = {}
    for line in text.splitlines():
        for key in ("count", "sum"):
            if line.startswith(f"nsfwoid_batch_size_{key} "):
                values[key] = float(line.split()[1])
    return values


MEASURE = """
import json, sys, time
from nsfwoid.scoring import imaging
imaging.configure_pillow(50_000_000)
data = sys.stdin.buffer.read()
started = time.monotonic()
frames = imaging.to_frames(data, max_pixels=50_000_000, exact=True, max_frames=8)
seconds = time.monotonic() - started
# VmHWM, not ru_maxrss: ru_maxrss keeps the peak of the parent that forked this process.
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
peak = int(status["VmHWM"].split()[0]) * 1024
print(json.dumps({"seconds": seconds, "peak_rss": peak, "indices": frames.indices, "count": frames.count}))
"""


def measure_frames(data: bytes) -> dict:
    """Decode in a fresh process, so that its peak RSS belongs to this image alone."""
    result = subprocess.run([sys.executable, "-c", MEASURE], input=data, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_ten_thousand_frames_are_sampled_in_bounded_time_and_memory():
    canvas = (256, 256)
    data = images.many_frame_gif(images.photo(LOW, canvas), 10_000)
    measured = measure_frames(data)
    assert measured["count"] == 10_000
    assert measured["indices"] == imaging.sample_indices(10_000, 8)
    # Recorded on the 2-core CI machine: 0.8–1.4 s, and a peak RSS of 64 MiB for the whole process, imports
    # included. Holding every frame would take 10,000 × 192 KiB ≈ 1.9 GiB.
    assert measured["seconds"] < 15
    assert measured["peak_rss"] < 160 * 2**20


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
def test_truncated_animation_ends_at_the_last_good_frame(fmt):
    data = clean_first_animation(fmt)
    measured = measure_frames(data[: int(len(data) * 0.7)])
    assert measured["indices"][0] == 0 and len(measured["indices"]) < len(SEQUENCE)
    # Recorded on the 2-core CI machine: 0.03 s, and a peak RSS of 57 MiB, imports included.
    assert measured["seconds"] < 5 and measured["peak_rss"] < 160 * 2**20


@pytest.mark.parametrize("fmt", ["GIF", "PNG"])
async def test_truncated_animation_is_scored_not_refused(make_client, fmt):
    client = await make_client(exact=True)
    data = clean_first_animation(fmt)
    body = await score_json(client, data[: int(len(data) * 0.7)])
    assert body["frames"]["count"] >= 1 and body["frames"]["scored"][0]["index"] == 0
    assert 0 <= body["score"] <= 1


async def test_seeking_counts_against_the_decode_time_limit(make_client):
    client = await make_client(decode_timeout=0.2)
    data = images.many_frame_gif(images.photo(LOW, (256, 256)), 10_000)
    started = time.monotonic()
    response = await client.post("/", data=data, headers={"Content-Type": "image/gif"})
    assert response.status == 413 and response.content_type == PROBLEM_CONTENT_TYPE
    assert (await response.json(content_type=None))["type"].endswith("image-too-large")
    assert time.monotonic() - started < 2  # the seek stopped at the limit, not after 10,000 frames
    assert (await client.get("/healthz")).status == 200


def test_tiff_pages_are_each_held_to_the_pixel_limit(model):
    small, large = images.photo(LOW, (100, 100)), images.photo(HIGH, (400, 400))
    data = images.animation([small, large], "TIFF")
    with pytest.raises(ImageTooLarge):
        imaging.to_frames(data, max_pixels=100 * 100, exact=True, max_frames=8)
    assert imaging.to_frames(data, max_pixels=100 * 100, exact=True, max_frames=1).indices == (0,)


@pytest.mark.processes
def test_cli_scores_every_frame(tmp_path, model):
    path = tmp_path / "clean_first.gif"
    path.write_bytes(clean_first_animation("GIF"))
    scores = {}
    for max_frames in ("8", "1"):
        result = subprocess.run([sys.executable, "-m", "nsfwoid", "score", "--exact", "--max-frames", max_frames,
                                 str(path)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        scores[max_frames] = float(result.stdout.split("\t")[0])
    stills = [float(model.run(reference.to_tensor(images.encode(frame, "PNG"), max_pixels=10**8, exact=True)[None])[0])
              for frame in images.decoded_frames(path.read_bytes())]
    assert scores["8"] == pytest.approx(max(stills), abs=1e-4)
    assert scores["1"] == pytest.approx(stills[0], abs=1e-4)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animation_canvas_is_held_to_the_pixel_limit(fmt):
    data = clean_first_animation(fmt)
    with pytest.raises(ImageTooLarge):
        imaging.to_frames(data, max_pixels=SIZE[0] * SIZE[1] - 1, exact=True, max_frames=8)
    assert imaging.to_frames(data, max_pixels=SIZE[0] * SIZE[1], exact=True, max_frames=8).count == len(SEQUENCE)
