"""What the tests share: real test images, the test settings, and a service to run and wait for.

Real images: the fidelity photographs, re-encoded in every format and mode Commons holds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from nsfwoid import imaging
from nsfwoid.config import Settings
from nsfwoid.errors import PROBLEM_CONTENT_TYPE, problem_type

DATA = Path(__file__).parent / "data"
FIDELITY = DATA / "fidelity"
PHOTOS = ("retina.jpg", "motorcycle.webp", "grass_1600.jpg", "brick.jpg")


def expected_scores() -> dict[str, float]:
    lines = (FIDELITY / "expected.tsv").read_text().splitlines()[1:]
    return {name: float(score) for name, score in (line.split("\t") for line in lines if line)}


def fixture_tensors() -> np.ndarray:
    """The fidelity fixtures' exact-path model inputs, in the sorted order of their names."""
    return np.stack([to_tensor((FIDELITY / name).read_bytes(), max_pixels=10**9, exact=True)
                     for name in sorted(expected_scores())])


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


# Tests reach only loopback: downloads go to local aiohttp servers, never to real hosts.
TEST_SETTINGS = Settings(
    allowed_hosts=("127.0.0.1", "localhost"),
    allow_private_addresses=True,
    fetch_timeout=5.0,
    request_timeout=10.0,
    log_format="console",
)


async def problem_of(response, status: int, name: str) -> dict:
    """Assert that a response is the named problem+json, and return its body."""
    assert response.status == status
    assert response.content_type == PROBLEM_CONTENT_TYPE
    body = await response.json(content_type=None)
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["type"] == problem_type(name) and body["status"] == status and body["detail"]
    return body


async def scrape(client) -> dict:
    """The service's /metrics, by metric family name."""
    response = await client.get("/metrics")
    assert response.status == 200 and response.content_type == "text/plain"
    return {family.name: family for family in text_string_to_metric_families(await response.text())}


def sample_value(family, suffix: str = "", **labels) -> float:
    """The sum of the family's samples (name + suffix) that have these labels."""
    total = 0.0
    for sample in family.samples:
        if sample.name == family.name + suffix and all(sample.labels.get(k) == v for k, v in labels.items()):
            total += sample.value
    return total


def metric_delta(before: dict, after: dict, name: str, suffix: str = "", **labels) -> float:
    """How much a metric's matching samples moved between two scrapes."""
    return sample_value(after[name], suffix, **labels) - sample_value(before[name], suffix, **labels)


async def until(condition, seconds: float = 10) -> None:
    """Wait until condition() is true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.02)


async def until_healthy(client, seconds: float = 60) -> None:
    """Wait until an in-process app's /healthz says ok, or that the model failed to start."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = await client.get("/healthz")
        if response.status == 200 or (await response.json())["status"] == "failed":
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("the app did not finish starting")


def png_with_text(data: bytes, text: bytes) -> bytes:
    """The same PNG, pixel for pixel, with a tEXt chunk after IHDR: other bytes, other SHA-1, same score."""
    return data[:33] + png_chunk(b"tEXt", b"Comment\0" + text) + data[33:]


def service_processes(pid: int) -> list[psutil.Process]:
    """A service process and its decode workers (and the forkserver they are forked from)."""
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def decode_workers(pid: int) -> list[psutil.Process]:
    """The decode workers of a service or of a `nsfwoid score` run: the children of the forkserver, itself a
    child of the process."""
    workers = []
    with contextlib.suppress(psutil.NoSuchProcess):  # a process may end while it is looked at
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                workers.extend(child.children())
    return workers


def worker_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each process under the service, by pid."""
    seconds = {}
    for child in service_processes(pid)[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = child.cpu_times()
            seconds[child.pid] = times.user + times.system
    return seconds


def busy_workers(pid: int, seconds: float = 0.5) -> list[int]:
    """Workers that spent CPU time over the next `seconds`."""
    before = worker_cpu_seconds(pid)
    time.sleep(seconds)
    after = worker_cpu_seconds(pid)
    return [p for p, spent in after.items() if spent - before.get(p, spent) > 0.05]


def service_rss(pid: int) -> int:
    """RSS of a service and its workers together."""
    total = 0
    for process in service_processes(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


class PeakRss:
    """Samples the summed RSS of a service and its workers every 10 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._running = pid, 0, True
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self._running:
            with contextlib.suppress(psutil.NoSuchProcess):  # it ended before the block did
                self.peak = max(self.peak, service_rss(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._running = False
        self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HungService:
    """A service that accepts connections and never answers, counting the connections it was sent."""

    def __init__(self, port: int = 0):
        self.listener = socket.create_server(("127.0.0.1", port))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def connections(self) -> int:
        return len(self.held)

    def _accept(self):
        with contextlib.suppress(OSError):  # the listener was closed
            while True:
                self.held.append(self.listener.accept()[0])

    def __enter__(self) -> HungService:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self):
        self.listener.shutdown(socket.SHUT_RDWR)  # on Linux this, not close(), ends a blocked accept()
        self.thread.join(10)
        self.listener.close()
        for connection in self.held:
            connection.close()


def start_service(stdout=subprocess.DEVNULL, cpus: set[int] | None = None, port: int | None = None,
                  cwd: Path | None = None, command: tuple[str, ...] = (sys.executable, "-m", "nsfwoid"),
                  **env: str) -> tuple[subprocess.Popen, str]:
    """`nsfwoid serve` as a real process on a loopback port, healthy: (process, base URL).

    `cpus`: pin the process to these cores, as a CPU limit confines a pod. `port`: a free one if not given.
    `cwd`, `command`: where and how it is run (`python -m nsfwoid`, or the console script).
    """
    port = port or free_port()
    full_env = {**os.environ, "NSFWOID_HOST": "127.0.0.1", "NSFWOID_PORT": str(port),
                "NSFWOID_LOG_LEVEL": "warning", **env}
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    process = subprocess.Popen([*command, "serve"], env=full_env, preexec_fn=pin, cwd=cwd,
                               stdout=stdout, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return process, base
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("nsfwoid did not become healthy")


def fast_path_deviation(model, data: bytes, rng: np.random.Generator, draws: int = 8) -> dict:
    """How far the fast decode moves an image's score, beside the image's own sensitivity.

    The sensitivity is the largest score change when 1 % of the exact path's 256 px pixels move by one
    level, over `draws` random draws: no decode that is not bit-exact can promise less than that.
    """
    from nsfwoid import imaging

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


class ForwardProxy:
    """A loopback HTTP forward proxy, as a cluster's egress proxy is: it relays GETs of plain-http URLs and tunnels
    CONNECTs (https), one connection each, and records the target of every request: a URL, or host:port."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
            request_line, _, header_block = head.partition(b"\r\n")
            method, target, version = request_line.split(b" ")
            self.requests.append(target.decode())
            if method == b"CONNECT":
                host, _, port = target.decode().rpartition(":")
                upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
                client_writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
                return
            url = urllib.parse.urlsplit(target.decode())
            headers = [line for line in header_block.split(b"\r\n") if line and not line.lower().startswith(
                (b"connection:", b"keep-alive:", b"proxy-"))]
            upstream_reader, upstream_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            upstream_writer.write(b"\r\n".join([b" ".join([method, path.encode(), version]), *headers,
                                                b"Connection: close", b"", b""]))
            await _pipe(upstream_reader, client_writer)
            upstream_writer.close()
        finally:
            client_writer.close()

    def close(self) -> None:
        self._server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until the reader's end, then close the writer."""
    try:
        while chunk := await reader.read(64 * 1024):
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def require_root_and(tools: tuple[str, ...], what: str, needs: str) -> None:
    """Tests that need root and these commands: skipped without them, and failed where CI=true, since CI has them."""
    missing = "not root" if os.geteuid() != 0 else None
    absent = [tool for tool in tools if shutil.which(tool) is None]
    missing = missing or (f"{', '.join(absent)} not installed" if absent else None)
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, but {what} cannot run: {missing}; it needs {needs}")
    if missing:
        pytest.skip(f"{missing}: {what} needs {needs}")


def b64_instance(data: bytes) -> dict:
    """A KServe instance of the image's bytes, TF-Serving's binary form."""
    return {"image": {"b64": base64.b64encode(data).decode()}}


# Yahoo's reference steps, one image at a time, as the tests compare with them. The service runs the same
# functions of imaging.py on batches of crops.

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


def answering(data: bytes, content_type: str) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler answering every GET with these bytes."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


@contextlib.contextmanager
def image_host(data: bytes, content_type: str):
    """A loopback HTTP server answering every GET with these bytes: its base URL, for the block."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), answering(data, content_type))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
