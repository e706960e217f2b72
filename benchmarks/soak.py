"""Soak: thousands of mixed good and hostile requests against one service process; RSS must stay bounded.
Then 64 clients each send a 24 MiB body at once, to show what NSFWOID_IMAGE_MEMORY bounds.

With --faults, instead: a timed mixed load while decode workers are killed (SIGKILL) and stopped (SIGSTOP) on a
schedule, busy or idle, as the OOM killer, an operator or a freezer would; the answers by status, p99, RSS, open
descriptors and live workers in each window. It fails (exit status 1) on any 500, any 503 but
decode-worker-lost, a /healthz that is not ok, or workers that are not restored.

    python benchmarks/soak.py [--requests 3000]                   # writes benchmarks/soak.json
    python benchmarks/soak.py --faults [--seconds 300]            # writes benchmarks/soak_faults.json
    python benchmarks/soak.py --faults --fault-every 0 --output soak_baseline.json   # the same load, no faults
"""

from __future__ import annotations

import os

# Before onnxruntime loads, in this process and every child it starts (peer library, ceiling sessions, services).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import argparse
import asyncio
import base64
import collections
import json
import random
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import numpy as np
import psutil
from common import Service, load, make_corpora, problem_type

from tests.images import bomb_png, gzip_bomb, huge_tile_tiff, large_canvas_webp, many_strip_tiff, slow_gif
from tests.processes import decode_workers

HERE = Path(__file__).resolve().parent
PREDICT = "/v1/models/open_nsfw:predict"


def upstream(photo: bytes) -> ThreadingHTTPServer:
    """A loopback image host: /ok serves a photo, /gone answers 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/ok"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(photo)))
                self.end_headers()
                self.wfile.write(photo)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


HOSTILE = {"tile": huge_tile_tiff(), "strips": many_strip_tiff(), "canvas": large_canvas_webp(),
           "slow": slow_gif(10_000)}
GZIP_BOMB = gzip_bomb()
DEEP_JSON = b'{"instances": [' + b"[" * 100_000 + b"]}"


def mixed_requests(corpora, host: str, count: int, rng: random.Random) -> list[tuple[str, dict]]:
    good = corpora["thumbs"] + corpora["png"] + corpora["camera"][:2]
    hostile = list(HOSTILE.values())
    kinds = [
        lambda: ("/", {"data": rng.choice(good), "headers": {"Content-Type": "image/jpeg"}}),
        lambda: ("/", {"data": rng.choice(good)[: rng.randint(100, 20000)], "headers": {"Content-Type": "image/jpeg"}}),
        lambda: ("/", {"data": rng.randbytes(512), "headers": {"Content-Type": "image/png"}}),
        lambda: ("/", {"data": {"url": f"http://{host}/ok/{rng.random()}"}}),
        lambda: ("/", {"data": {"url": f"http://{host}/gone"}}),
        lambda: ("/", {"data": {"url": "http://169.254.169.254/latest/meta-data/"}}),
        lambda: ("/", {"data": {"url": "http://2130706433/"}}),
        lambda: ("/v1/score", {"data": b"", "headers": {"Content-Type": "image/jpeg"}}),
        lambda: ("/", {"data": bomb_png(), "headers": {"Content-Type": "image/png"}}),
        lambda: ("/", {"data": GZIP_BOMB, "headers": {"Content-Type": "image/png", "Content-Encoding": "gzip"}}),
        lambda: (PREDICT, {"json": {"instances": [{"image": {"b64": base64.b64encode(rng.choice(good)).decode()}},
                                                  {"image": {"b64": "not base64"}},
                                                  {"url": f"http://{host}/ok/{rng.random()}"}]}}),
        lambda: (PREDICT, {"data": DEEP_JSON, "headers": {"Content-Type": "application/json"}}),
        # a 1 GiB TIFF tile, 8 million TIFF strips, a 7000×7000 animation canvas, an animation slower to seek
        # than the decode limit
        lambda: ("/", {"data": rng.choice(hostile), "headers": {"Content-Type": "application/octet-stream"}}),
    ]
    return [rng.choice(kinds)() for _ in range(count)]


def large_bodies(clients: int = 64, size: int = 24 * 2**20) -> dict:
    """Many clients each sending a large body at once, to a fresh service with its defaults (but a read timeout
    that lets every body arrive): how much the service holds at its peak."""
    service = Service(NSFWOID_READ_TIMEOUT="120")
    try:
        body = random.Random(5).randbytes(size)
        requests = [("/", {"data": body, "headers": {"Content-Type": "image/png"}})] * clients
        server_errors: dict[str, int] = {}
        _, _, statuses = asyncio.run(load([service.base], requests, clients, server_errors))
        return {"clients": clients, "body_mib": size / 2**20,
                "statuses": {str(k): v for k, v in sorted(statuses.items())}, "server_errors": server_errors,
                "peak_rss_mib": round(service.peak_rss_bytes() / 2**20, 1), "healthy_after": service.healthy()}
    finally:
        service.stop()


WORKERS = 2
FAULT_EVERY_S = 2.5  # one fault every so often; every third is a SIGSTOP, the others SIGKILL
ALLOWED_5XX = {"503 decode-worker-lost"}


def fault_requests(corpora, rng: random.Random):
    """The soak's mix: thumbnails, 12 MP photos, bad files and KServe calls."""
    broken = [photo[: len(photo) // 3] + rng.randbytes(2048) for photo in corpora["thumbs"][:4]]
    kinds = [
        lambda: ("/", {"data": rng.choice(corpora["thumbs"]), "headers": {"Content-Type": "image/jpeg"}}),
        lambda: ("/", {"data": rng.choice(corpora["thumbs"]), "headers": {"Content-Type": "image/jpeg"}}),
        lambda: ("/", {"data": rng.choice(corpora["camera"]), "headers": {"Content-Type": "image/jpeg"}}),
        lambda: ("/", {"data": rng.choice(broken) if rng.random() < 0.5 else rng.randbytes(700),
                       "headers": {"Content-Type": "image/jpeg"}}),
        lambda: (PREDICT, {"json": {"instances": [{"image": {"b64": base64.b64encode(photo).decode()}}
                                                  for photo in rng.sample(corpora["thumbs"], 2)]}}),
    ]
    return lambda: rng.choice(kinds)()


async def faulted_load(service: Service, corpora, seconds: float, window: float, concurrency: int,
                       every: float) -> dict:
    started = time.monotonic()
    end = started + seconds
    windows: dict[int, dict] = collections.defaultdict(lambda: {"answers": collections.Counter(), "latencies": [],
                                                                "rss_mib": 0.0, "fds": 0, "workers": []})
    faults: collections.Counter = collections.Counter()
    health: collections.Counter = collections.Counter()
    main_process = psutil.Process(service.process.pid)

    def current() -> dict:
        return windows[int((time.monotonic() - started) // window)]

    async def client(session: aiohttp.ClientSession, number: int) -> None:
        next_request = fault_requests(corpora, random.Random(number))
        while time.monotonic() < end:
            path, kwargs = next_request()
            sent = time.perf_counter()
            async with session.post(service.base + path, **kwargs) as response:
                body = await response.read()
            answer = str(response.status) if response.status < 500 else f"{response.status} {problem_type(body)}"
            at = current()
            at["answers"][answer] += 1
            at["latencies"].append(time.perf_counter() - sent)

    async def injector() -> None:
        rng = random.Random(3)
        while every and time.monotonic() < end - 3 * every:  # the last seconds show the recovery
            await asyncio.sleep(every)
            workers = decode_workers(service.process.pid)
            if not workers:
                continue
            victim = rng.choice(workers)
            kind = "SIGSTOP" if sum(faults.values()) % 3 == 2 else "SIGKILL"
            try:
                victim.send_signal(signal.Signals[kind])
                faults[kind] += 1
            except psutil.NoSuchProcess:
                pass

    async def sampler(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            at = current()
            at["rss_mib"] = max(at["rss_mib"], service.rss_bytes() / 2**20)
            at["fds"] = max(at["fds"], main_process.num_fds())
            at["workers"].append(len(decode_workers(service.process.pid)))
            async with session.get(service.base + "/healthz") as response:
                health[response.status] += 1
            await asyncio.sleep(0.5)

    connector = aiohttp.TCPConnector(limit=concurrency + 1)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(client(session, n) for n in range(concurrency)), injector(), sampler(session))
    table = []
    for index in sorted(windows):
        at = windows[index]
        if not at["workers"]:  # the answers that came after the last sample: not a window
            continue
        table.append({"from_s": index * window, "answers": dict(sorted(at["answers"].items())),
                      "p99_ms": round(float(np.percentile(at["latencies"], 99)) * 1000, 1) if at["latencies"] else None,
                      "rss_mib": round(at["rss_mib"], 1), "fds": at["fds"],
                      "workers_min": min(at["workers"], default=None)})
    return {"seconds": seconds, "window_s": window, "concurrency": concurrency, "decode_workers": WORKERS,
            "fault_every_s": every, "faults": dict(faults), "healthz": {str(k): v for k, v in health.items()},
            "windows": table}


def fault_soak(seconds: float, window: float, concurrency: int, every: float, output: Path) -> bool:
    """The soak under faults; True when every check held. Writes `output`."""
    corpora = make_corpora()
    service = Service(NSFWOID_DECODE_WORKERS=str(WORKERS), NSFWOID_DECODE_TIMEOUT="2")
    try:
        report = asyncio.run(faulted_load(service, corpora, seconds, window, concurrency, every))
        deadline = time.monotonic() + 15
        while len(decode_workers(service.process.pid)) < WORKERS and time.monotonic() < deadline:
            time.sleep(0.1)
        report["workers_after"] = len(decode_workers(service.process.pid))
        report["healthy_after"] = service.healthy()
    finally:
        service.stop()
    answers = collections.Counter()
    for row in report["windows"]:
        answers.update(row["answers"])
    report["answers"] = dict(sorted(answers.items()))
    failures = [a for a in answers if a[0] == "5" and a not in ALLOWED_5XX]
    if failures:
        print(f"soak: server errors other than {sorted(ALLOWED_5XX)}: {failures}")
    if set(report["healthz"]) != {"200"} or not report["healthy_after"]:
        print(f"soak: /healthz was not always ok: {report['healthz']}, after: {report['healthy_after']}")
    if report["workers_after"] != WORKERS:
        print(f"soak: {report['workers_after']} of {WORKERS} decode workers after the faults")
    output.write_text(json.dumps(report, indent=2) + "\n")
    for row in report["windows"]:
        print(row, flush=True)
    print(json.dumps({k: v for k, v in report.items() if k != "windows"}))
    return (not failures and set(report["healthz"]) == {"200"} and report["healthy_after"]
            and report["workers_after"] == WORKERS and (sum(report["faults"].values()) > 0 or not every))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--faults", action="store_true", help="the timed soak with decode workers killed and stopped")
    parser.add_argument("--seconds", type=float, default=300, help="with --faults: how long")
    parser.add_argument("--window", type=float, default=60, help="with --faults: seconds a row of the report covers")
    parser.add_argument("--output", type=Path, help="with --faults: the report (default: soak_faults.json here)")
    parser.add_argument("--fault-every", type=float, default=FAULT_EVERY_S,
                        help="with --faults: seconds between faults; 0: none, the same load as a baseline")
    args = parser.parse_args()
    if args.faults:
        raise SystemExit(0 if fault_soak(args.seconds, args.window, args.concurrency, args.fault_every,
                                         args.output or HERE / "soak_faults.json") else 1)

    rng = random.Random(11)
    corpora = make_corpora()
    image_host = upstream(corpora["thumbs"][0])
    host = f"127.0.0.1:{image_host.server_address[1]}"
    service = Service(NSFWOID_ALLOWED_HOSTS="127.0.0.1,169.254.169.254,2130706433",
                      NSFWOID_ALLOW_PRIVATE_ADDRESSES="false", NSFWOID_DECODE_TIMEOUT="1")
    # The guard refuses 127.0.0.1 too, so URL requests to the local host are refused (403) by design;
    # a second service with the guard lifted covers real downloads.
    trusting = Service(NSFWOID_ALLOWED_HOSTS="127.0.0.1", NSFWOID_ALLOW_PRIVATE_ADDRESSES="true",
                       NSFWOID_DECODE_TIMEOUT="1")
    report = {"requests": args.requests, "concurrency": args.concurrency, "rounds": []}
    try:
        rounds = 6
        for _ in range(rounds):
            server_errors: dict[str, int] = {}
            for target in (service, trusting):
                batch = mixed_requests(corpora, host, args.requests // (rounds * 2), rng)
                _, _, statuses = asyncio.run(load([target.base], batch, args.concurrency, server_errors))
                assert all(code < 500 or code == 503 for code in statuses), statuses
            report["rounds"].append({"rss_mib": round(service.rss_bytes() / 2**20, 1),
                                     "trusting_rss_mib": round(trusting.rss_bytes() / 2**20, 1),
                                     "statuses": {str(k): v for k, v in sorted(statuses.items())},
                                     "server_errors": server_errors})
            print(report["rounds"][-1], flush=True)
        report["healthy_after"] = service.healthy() and trusting.healthy()
        first, last = report["rounds"][0], report["rounds"][-1]
        report["rss_growth_mib_after_first_round"] = round(
            max(last["rss_mib"] - first["rss_mib"], last["trusting_rss_mib"] - first["trusting_rss_mib"]), 1)
        report["peak_rss_mib"] = round(max(service.peak_rss_bytes(), trusting.peak_rss_bytes()) / 2**20, 1)
    finally:
        service.stop()
        trusting.stop()
        image_host.shutdown()
    report["large_bodies"] = large_bodies()
    print(report["large_bodies"], flush=True)
    (HERE / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "rounds"}))


if __name__ == "__main__":
    main()
