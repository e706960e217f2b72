"""Shared by the benchmark and the soak test: generated corpora, a service process, an HTTP load loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import resource
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks share the tests' helpers

from tests import images, processes  # noqa: E402
from tests.images import encode  # noqa: E402
from tests.processes import start_service  # noqa: E402

PHOTOS = [images.FIDELITY / name for name in images.PHOTOS]


def _crop(rng: random.Random, photo: Image.Image, aspect: float) -> Image.Image:
    """A random crop of a real photograph, so that no two corpus images are the same."""
    w, h = photo.size
    cw = int(w * rng.uniform(0.6, 1.0))
    ch = min(h, int(cw / aspect))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = photo.crop((x, y, x + cw, y + ch))
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def make_corpora(seed: int = 7, only: str | None = None) -> dict[str, list[bytes]]:
    """thumbs: 320 and 1280 px wide JPEGs; camera: 12 MP JPEGs; png: a PNG mix. All from real photos.

    `only="thumbs"`: just the thumbnails (the same ones: they are made first).
    """
    rng = random.Random(seed)
    photos = [Image.open(p).convert("RGB") for p in PHOTOS]
    thumbs, camera, png = [], [], []
    for i in range(32):
        width = 320 if i % 2 == 0 else 1280
        aspect = rng.choice([4 / 3, 3 / 2, 1.0, 3 / 4])
        image = _crop(rng, photos[i % len(photos)], aspect)
        image = image.resize((width, int(width / aspect)), Image.Resampling.LANCZOS)
        thumbs.append(encode(image, "JPEG", quality=rng.choice([80, 85, 90])))
    if only == "thumbs":
        return {"thumbs": thumbs}
    for i in range(8):
        size = (4000, 3000) if i % 2 == 0 else (3000, 4000)
        image = _crop(rng, photos[i % len(photos)], size[0] / size[1]).resize(size, Image.Resampling.BICUBIC)
        camera.append(encode(image, "JPEG", quality=92))
    for i in range(16):
        width = rng.choice([640, 800, 1024])
        image = _crop(rng, photos[i % len(photos)], 4 / 3).resize((width, width * 3 // 4), Image.Resampling.LANCZOS)
        mode = ["RGB", "P", "RGBA", "L"][i % 4]
        image = image.convert(mode) if mode != "P" else image.convert("P", palette=Image.Palette.ADAPTIVE)
        png.append(encode(image, "PNG"))
    return {"thumbs": thumbs, "camera": camera, "png": png}


class Service:
    """`nsfwoid serve` in its own process, as in production."""

    def __init__(self, cpus: set[int] | None = None, **env: str) -> None:
        """`cpus`: pin the process to these cores, as a CPU limit would confine a pod."""
        self.process, self.base = start_service(cpus=cpus, **env)
        self.ps = psutil.Process(self.process.pid)

    def cpu_seconds(self) -> float:
        """The service's CPU time, its decode workers' included, ended ones too (through children_*)."""
        total = 0.0
        for process in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        return total

    def rss_bytes(self) -> int:
        """RSS of the service and its decode workers together."""
        return processes.service_rss(self.process.pid)

    def peak_rss_bytes(self) -> int:
        """The sum of each process's peak RSS: an upper bound on the peak of their sum."""
        total = 0
        for process in self._processes():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
        return total

    def _processes(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return processes.service_processes(self.process.pid)
        return [self.ps]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/healthz", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)


async def load(
    bases: list[str], requests: list[tuple[str, dict]], concurrency: int, server_errors: dict | None = None
) -> tuple[float, list[float], dict[int, int]]:
    """Send (path, aiohttp kwargs) requests with `concurrency` workers: (seconds, latencies, status counts).

    With several bases, each request goes to the one with the fewest requests in flight, as a
    least-request load balancer would send it. `server_errors`: where to count each 5xx answer by status
    and problem type.
    """
    queue = list(requests)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    in_flight = [0] * len(bases)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def worker():
            while queue:
                path, kwargs = queue.pop()
                target = min(range(len(bases)), key=in_flight.__getitem__)
                in_flight[target] += 1
                started = time.perf_counter()
                async with session.post(bases[target] + path, **kwargs) as response:
                    body = await response.read()
                if server_errors is not None and response.status >= 500:
                    kind = f"{response.status} {problem_type(body)}"
                    server_errors[kind] = server_errors.get(kind, 0) + 1
                in_flight[target] -= 1
                latencies.append(time.perf_counter() - started)
                statuses[response.status] = statuses.get(response.status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies, statuses


def problem_type(body: bytes) -> str:
    """The stable name at the end of a problem+json answer's type, or what the body is instead."""
    try:
        return json.loads(body)["type"].rsplit(":", 1)[-1]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "not problem+json"


def image_posts(corpus: list[bytes], count: int) -> list[tuple[str, dict]]:
    """`count` POSTs of the corpus's images to /, the corpus repeated as needed."""
    return [("/", {"data": corpus[i % len(corpus)], "headers": {"Content-Type": "image/jpeg"}}) for i in range(count)]


def measured_load(services: list[Service], requests: list[tuple[str, dict]], concurrency: int
                  ) -> tuple[dict, dict[int, int]]:
    """A warm-up of twice `concurrency` requests, then all of `requests` through the least-request spreader:
    (images/s of the 200 answers, latency percentiles, core-ms per request of the services and of this
    process; the status counts)."""
    bases = [service.base for service in services]
    asyncio.run(load(bases, requests[: concurrency * 2], concurrency))
    server_before, client_before = _services_cpu_seconds(services), _own_cpu_seconds()
    elapsed, latencies, statuses = asyncio.run(load(bases, requests, concurrency))
    count = len(requests)
    row = {"images_per_s": round(statuses.get(200, 0) / elapsed, 1), **percentiles(latencies),
           "server_core_ms_per_image": round((_services_cpu_seconds(services) - server_before) / count * 1000, 2),
           "client_core_ms_per_image": round((_own_cpu_seconds() - client_before) / count * 1000, 2)}
    return row, statuses


def _services_cpu_seconds(services: list[Service]) -> float:
    return sum(service.cpu_seconds() for service in services)


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def batch_of(tensors: list[np.ndarray], size: int) -> np.ndarray:
    """A batch of `size` tensors, the list repeated as needed."""
    return np.stack([tensors[i % len(tensors)] for i in range(size)])


def images_per_s(model, batch: np.ndarray, seconds: float) -> float:
    return round(inference(model, batch, seconds)[0], 1)


def inference(model, batch: np.ndarray, seconds: float) -> tuple[float, float]:
    """(images/s, CPU ms of this process per image) of `model` on `batch`, after one warm-up run."""
    model.run(batch)
    return run_for(seconds, lambda: len(model.run(batch)))


def run_for(seconds: float, step) -> tuple[float, float]:
    """Call `step` (it returns how many items it did) for `seconds`: (items per second, CPU ms of this
    process per item)."""
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        done += step()
    return done / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / done


def percentiles(latencies: list[float]) -> dict[str, float]:
    values = np.array(latencies) * 1000
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 1) for q in (50, 95, 99)}
