"""Decoding in killable worker processes, against a real `nsfwoid serve`: time and memory limits, crashes,
abandoned decodes, the drain, and the peak RSS of the service with its workers for every hostile case."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
import numpy as np
import psutil
import pytest
from PIL import Image

from nsfwoid.scoring import sandbox

from . import helpers, images, processes

# Real `nsfwoid` processes, each with its decode workers.
pytestmark = pytest.mark.processes

BRICK = (images.FIDELITY / "brick.jpg").read_bytes()


@pytest.fixture
def service(request):
    env = getattr(request, "param", {})
    process, base = processes.start_service(**env)
    yield process, base
    process.kill()
    process.wait()


async def post(session: aiohttp.ClientSession, base: str, data: bytes) -> tuple[int, dict | str]:
    async with session.post(base + "/", data=data, headers={"Content-Type": "application/octet-stream",
                                                            "Accept": "application/json"}) as response:
        body = await response.json(content_type=None) if response.status != 200 else await response.json()
        return response.status, body


async def still_healthy(session: aiohttp.ClientSession, base: str) -> None:
    async with session.get(base + "/healthz") as response:
        assert response.status == 200
    status, body = await post(session, base, (images.FIDELITY / "brick.jpg").read_bytes())
    assert status == 200 and 0 <= body["score"] <= 1


@pytest.mark.parametrize("service", [{"NSFWOID_DECODE_TIMEOUT": "0.5"}], indirect=True)
async def test_a_decode_past_its_time_is_killed_with_a_413(service):
    process, base = service
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        status, body = await post(session, base, images.slow_gif())
        assert status == 413 and body["type"].endswith("image-too-large"), body
        assert "longer than 0.5 s" in body["detail"]
        assert time.monotonic() - started < 2
        assert processes.busy_workers(process.pid) == []  # killed, not left decoding
        await still_healthy(session, base)


@pytest.mark.parametrize("service", [{"NSFWOID_REQUEST_TIMEOUT": "2", "NSFWOID_FETCH_TIMEOUT": "1",
                                      "NSFWOID_DECODE_TIMEOUT": "60"}], indirect=True)
async def test_a_decode_stops_when_its_request_is_answered(service):
    process, base = service
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, base, images.slow_gif())
        assert status in (413, 503), body  # the request's deadline caps the decode's time
        assert processes.busy_workers(process.pid) == []
        await still_healthy(session, base)


async def test_a_client_hanging_up_stops_its_decode(service):
    process, base = service
    data = images.slow_gif()
    _, writer = await asyncio.open_connection("127.0.0.1", int(base.rsplit(":", 1)[1]))
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: image/gif\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(data) + data)
    await writer.drain()
    while not await asyncio.to_thread(processes.busy_workers, process.pid, 0.2):
        pass
    writer.close()
    await asyncio.sleep(0.3)
    # The worker was killed, not left decoding.
    assert await asyncio.to_thread(processes.busy_workers, process.pid) == []
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/metrics") as response:
            assert 'status="499"' in await response.text()
        await still_healthy(session, base)


async def test_a_crashed_worker_is_replaced_and_its_request_gets_a_422(service):
    process, base = service
    async with aiohttp.ClientSession() as session:
        pending = asyncio.create_task(post(session, base, images.slow_gif()))
        busy = []
        while not busy:
            busy = await asyncio.to_thread(processes.busy_workers, process.pid, 0.2)
        for pid in busy:
            psutil.Process(pid).send_signal(signal.SIGSEGV)  # as a codec's bug would
        status, body = await pending
        assert status == 422 and "crashed" in body["detail"], body
        await still_healthy(session, base)
        assert process.poll() is None


@pytest.mark.parametrize("service", [{"NSFWOID_DECODE_MEMORY": str(320 * 2**20)}], indirect=True)
async def test_a_decode_past_its_memory_limit_gets_a_413(service):
    _, base = service
    large = images.encode(Image.new("RGBA", (6000, 6000), (200, 100, 50, 255)), "PNG")  # 144 MB of RGBA
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, base, large)
        assert status == 413 and "MiB a decode worker may use" in body["detail"], body
        await still_healthy(session, base)


@pytest.mark.parametrize("service", [{"NSFWOID_DRAIN_TIMEOUT": "1", "NSFWOID_DECODE_TIMEOUT": "25"}],
                         indirect=True)
async def test_sigterm_exits_within_the_drain_timeout_while_decodes_run(service):
    process, base = service
    workers = processes.service_processes(process.pid)[1:]
    async with aiohttp.ClientSession() as session:
        pending = [asyncio.create_task(post(session, base, images.slow_gif())) for _ in range(2)]
        while len(await asyncio.to_thread(processes.busy_workers, process.pid, 0.2)) < 2:
            pass
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 20)
        elapsed = time.monotonic() - started
        for task in pending:
            task.cancel()
    assert code == 0 and elapsed < 1 + 1 + 0.5, elapsed
    time.sleep(0.5)
    assert [worker.pid for worker in workers if still_running(worker)] == []


def still_running(process: psutil.Process) -> bool:
    """Running, not a zombie: a killed worker whose parent died waits for whoever adopts it to reap it."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_request_body_gzip_bombs_cost_no_cpu_after_their_answer(service):
    process, base = service
    bomb = images.gzip_bomb()
    port = int(base.rsplit(":", 1)[1])

    async def send() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Encoding: gzip\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(bomb) + bomb)
        try:
            return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        finally:
            writer.close()

    heads = await asyncio.gather(*(send() for _ in range(8)))
    assert all(head.startswith(b"HTTP/1.1 415 ") and b"Connection: close" in head for head in heads), heads[0]
    service_process = psutil.Process(process.pid)
    before = sum(service_process.cpu_times()[:2])
    await asyncio.sleep(1)
    assert sum(service_process.cpu_times()[:2]) - before < 0.2  # nothing decompressed, nothing drained
    async with aiohttp.ClientSession() as session:
        await still_healthy(session, base)


def float_tiff(size: tuple[int, int]) -> bytes:
    steps = (np.arange(size[0], dtype=np.float32) // 500) * 60  # 0 to 900, in bands: it compresses
    values = np.tile(steps, (size[1], 1))
    return images.encode(Image.fromarray(values, mode="F"), "TIFF", compression="tiff_adobe_deflate")


def gradient(size: tuple[int, int]) -> Image.Image:
    """A smooth picture that compresses well, so that a 45 MP PNG fits under the body cap."""
    x = np.linspace(0, 255, size[0], dtype=np.uint8)
    y = np.linspace(0, 255, size[1], dtype=np.uint8)[:, None]
    return Image.fromarray(np.dstack(np.broadcast_arrays(x[None, :], y, (x[None, :] // 2 + y // 2))))


def test_decode_workers_start_small_on_any_number_of_cores(service):
    """numpy's OpenBLAS maps about 40 MiB of address space per core as it is imported. Decode workers, forked
    from a server that imports numpy, are held to one OpenBLAS thread, or on 16 cores they would start at
    750 MiB of their 768 MiB limit (measured by faking 16 cores), and a 45 MP PNG would get a 413."""
    process, _ = service
    children = processes.service_processes(process.pid)[1:]
    assert len(children) >= 2  # the forkserver and its workers
    for child in children:
        assert child.environ().get("OPENBLAS_NUM_THREADS") == "1", child
        assert child.memory_info().vms < sandbox.WORKER_BASELINE_BYTES, child.memory_info()


async def test_starting_a_decode_pool_leaves_the_environment_alone():
    before = dict(os.environ)
    async with sandbox.DecodePool(helpers.TEST_SETTINGS):
        pass
    assert dict(os.environ) == before


async def test_decode_workers_load_neither_aiohttp_nor_prometheus_client():
    """A worker holds the decoder and the error taxonomy, not the HTTP layer or the metrics."""
    async with sandbox.DecodePool(helpers.TEST_SETTINGS) as pool:
        decoded = await pool.decode((images.FIDELITY / "brick.jpg").read_bytes(), exact=True, timeout=30)
        loaded = await pool.run(eval, b"sorted(__import__('sys').modules)", timeout=30)
    assert decoded.frames.count == 1 and "nsfwoid.scoring.imaging" in loaded and "nsfwoid.errors" in loaded
    assert not [name for name in loaded if name.split(".")[0] in ("aiohttp", "prometheus_client")]


CASES = {
    # name: (bytes, copies sent at once, the statuses allowed)
    "huge TIFF tile": (images.huge_tile_tiff, 2, {413}),
    "7000×7000 animated WebP canvas": (images.large_canvas_webp, 2, {413}),
    "TIFF of 8 million strips": (images.many_strip_tiff, 2, {413}),
    "16-bit grey 8000×6000 PNG": (lambda: images.sixteen_bit_grey_png(Image.new("L", (8000, 6000), 90)), 2, {200}),
    "float32 8000×6000 TIFF": (lambda: float_tiff((8000, 6000)), 2, {200}),
    "45 MP PNG": (lambda: images.encode(gradient((7800, 5800)), "PNG"), 32, {200}),
    "12 MP JPEG": (lambda: images.encode(gradient((4000, 3000)), "JPEG", quality=90), 32, {200}),
}


# The bound is a pod's: two decode workers and the CPU provider, as in CI, whatever the machine. More
# workers, or a CUDA context, need more memory.
@pytest.mark.parametrize("service", [{"NSFWOID_DECODE_WORKERS": "2", "NSFWOID_PROVIDERS": "CPUExecutionProvider"}],
                         indirect=True)
@pytest.mark.parametrize("case", CASES)
async def test_hostile_and_huge_images_stay_under_1_5_gib(service, case):
    process, base = service
    build, copies, allowed = CASES[case]
    data = build()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        with processes.PeakRss(process.pid) as rss:
            results = await asyncio.gather(*(post(session, base, data) for _ in range(copies)))
        assert {status for status, _ in results} <= allowed, results[:2]
        print(f"{case}: peak RSS {rss.peak / 2**20:.0f} MiB, service and workers")
        assert rss.peak < 1.5 * 2**30, f"{case}: {rss.peak / 2**20:.0f} MiB"
        await still_healthy(session, base)


async def test_three_json_calls_of_24_mib_of_objects_cost_little_and_leave_healthz_prompt(service):
    """Three KServe calls at once, each one good instance and 24 MiB of {}: refused before they are parsed, so the
    service holds about their bodies (it grew by 2 GiB before, and answered 200), and /healthz answers within the
    readiness probe's 2 s throughout (json.loads held the GIL for seconds)."""
    process, base = service
    good = json.dumps(helpers.b64_instance(BRICK)).encode()
    body = b'{"instances": [' + good + b", " + b"{}, " * (6 * 2**20) + b"{}]}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def call() -> tuple[int, dict]:
            async with session.post(base + "/v1/models/open_nsfw:predict", data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                return response.status, await response.json(content_type=None)

        with processes.PeakRss(process.pid) as rss:
            calls = asyncio.gather(*(call() for _ in range(3)))
            slowest = 0.0
            while not calls.done():
                started = time.monotonic()
                async with session.get(base + "/healthz") as response:
                    assert response.status == 200
                slowest = max(slowest, time.monotonic() - started)
                await asyncio.sleep(0.05)
            results = await calls
        assert [status for status, _ in results] == [400] * 3, results[0]
        assert all("NSFWOID_MAX_INSTANCES" in problem["detail"] for _, problem in results)
        print(f"three 24 MiB JSON calls: peak RSS {rss.peak / 2**20:.0f} MiB, slowest /healthz {slowest:.3f} s")
        assert rss.peak < 1024 * 2**20 and slowest < 2
        await still_healthy(session, base)
