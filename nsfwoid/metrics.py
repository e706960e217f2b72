"""Every Prometheus metric nsfwoid exports, defined once. Process metrics come with prometheus-client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BYTES_BUCKETS = tuple(2**p for p in range(10, 27, 2))  # 1 KiB … 64 MiB
SCORE_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
FRAME_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)

HTTP_REQUESTS = Counter(
    "nsfwoid_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_REQUEST_DURATION = Histogram(
    "nsfwoid_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
INFLIGHT = Gauge("nsfwoid_inflight_requests", "Scoring requests in progress")
IMAGE_BYTES_HELD = Gauge("nsfwoid_image_bytes_held", "Bytes of request bodies and downloads counted against "
                         "NSFWOID_IMAGE_MEMORY")
ERRORS = Counter("nsfwoid_errors_total", "Problems answered, by type", ["type"])
FETCH_DURATION = Histogram("nsfwoid_fetch_duration_seconds", "Time to download an image URL", buckets=LATENCY_BUCKETS)
FETCH_BYTES = Histogram("nsfwoid_fetch_bytes", "Size of downloaded images", buckets=BYTES_BUCKETS)
PREPROCESS_DURATION = Histogram(
    "nsfwoid_preprocess_duration_seconds", "Time to decode and preprocess an image", buckets=LATENCY_BUCKETS
)
INFERENCE_DURATION = Histogram(
    "nsfwoid_inference_duration_seconds", "Time of one batched model run", buckets=LATENCY_BUCKETS
)
BATCH_SIZE = Histogram("nsfwoid_batch_size", "Images in one model run", buckets=BATCH_BUCKETS)
FRAMES_SCORED = Histogram(
    "nsfwoid_frames_scored", "Frames (or pages) scored per image; 1 for a still", buckets=FRAME_BUCKETS
)
SCORES = Histogram("nsfwoid_score", "NSFW scores returned", buckets=SCORE_BUCKETS)
DECODE_WORKERS = Gauge("nsfwoid_decode_workers", "Decode worker processes alive and ready")
DECODE_WORKERS_REPLACED = Counter(
    "nsfwoid_decode_workers_replaced", "Decode workers replaced, by cause: the pool's own limits (timeout, "
    "cancelled), a codec crash on an image (crash), or an end from outside (outside: the OOM killer, an operator)",
    ["cause"],
)
MODEL_INFO = Info("nsfwoid_model", "The model being served")
# Where a scored image's CPU time goes, in the service's own words: each stage's own CPU time, on its own threads
# or processes, or (intake) on the event loop's thread between its awaits. The rest follows from the process's CPU
# time: HTTP and the event loop are the main thread's beyond intake; inference is what the process spends beyond
# the main thread, `exchange` and `batching` (the model's own threads included); the decode workers' CPU time
# beyond `decode` is their side of the trip.
STAGE_CPU = Counter(
    "nsfwoid_stage_cpu_seconds", "CPU time by stage of scoring: intake (checking and reading a request's "
    "input, on the event loop), decode (in the decode workers: decoding and preprocessing), exchange "
    "(the service's side of the trip to a decode worker and back), batching (a model run's input assembled from "
    "the crops)", ["stage"],
)
STAGES = ("intake", "decode", "exchange", "batching")
# Each stage's series, there from the start: no label lookup per image, and a zero before the first.
STAGE_SECONDS = {stage: STAGE_CPU.labels(stage) for stage in STAGES}


@contextmanager
def stage_cpu(stage: str) -> Iterator[None]:
    """Count the CPU time this thread spends in the block as `stage`'s. The block must not await: on the event
    loop, other tasks' time would be counted too."""
    started = time.thread_time()
    try:
        yield
    finally:
        STAGE_SECONDS[stage].inc(time.thread_time() - started)


def count_request(method: str, route: str, status: int, seconds: float) -> None:
    labels = (method, route, str(status))
    HTTP_REQUESTS.labels(*labels).inc()
    HTTP_REQUEST_DURATION.labels(*labels).observe(seconds)
