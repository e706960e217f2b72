"""Soak: thousands of mixed good and hostile requests against one service process; RSS must stay bounded.
Then 64 clients each send a 24 MiB body at once, to show what NSFWOID_IMAGE_MEMORY bounds.

    python benchmarks/soak.py [--requests 3000]     # writes benchmarks/soak.json
"""

from __future__ import annotations

import os

# Before onnxruntime loads, in this process and every child it starts (peer library, ceiling sessions, services).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import argparse
import asyncio
import base64
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from common import Service, load, make_corpora

from tests.helpers import bomb_png, gzip_bomb, huge_tile_tiff, large_canvas_webp, many_strip_tiff, slow_gif

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

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
