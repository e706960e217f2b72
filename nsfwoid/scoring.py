"""The one scoring path: bytes → sampled frames' crops (decode workers) → batcher → score, SHA-1, timings.

The HTTP routes, the CLI and the start-up self-test all score through a Scorer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from . import imaging, metrics
from .batcher import Batcher, RunBatch
from .config import Settings
from .errors import Problem
from .logging import get_logger
from .model import ModelError
from .sandbox import DecodePool

SCORE_DECIMALS = 9
SELFTEST_IMAGE = Path(__file__).with_name("selftest.png")
# Reference score of selftest.png (the fidelity fixture warm_flat.png) from the original Caffe weights.
SELFTEST_EXPECTED = 0.290647030
SELFTEST_TOLERANCE = 1e-4
BASE36_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def format_score(value: float) -> str:
    """The text form of a score: nine decimals."""
    return f"{value:.{SCORE_DECIMALS}f}"


def base36_sha1(hex_digest: str) -> str:
    """MediaWiki's img_sha1 form of a SHA-1: base 36, zero-padded to 31 digits."""
    number, digits = int(hex_digest, 16), []
    while number:
        number, rest = divmod(number, 36)
        digits.append(BASE36_DIGITS[rest])
    return "".join(reversed(digits)).rjust(31, "0")


@dataclass(frozen=True)
class Scored:
    """One image's score: the highest of its sampled frames' scores."""

    score: float
    frame_scores: tuple[tuple[int, float], ...]  # (frame index, score), in frame order
    frame_count: int
    sha1: str
    size: int
    preprocess_seconds: float
    inference_seconds: float

    @property
    def sha1_base36(self) -> str:
        return base36_sha1(self.sha1)

    def frames_json(self) -> dict:
        return {"count": self.frame_count,
                "scored": [{"index": index, "score": score} for index, score in self.frame_scores]}

    def to_json(self, *, model: dict, source: str, fetch_seconds: float | None, total_seconds: float) -> dict:
        """The JSON answer of POST /v1/score, and each prediction of the KServe :predict route."""
        timings = {"fetch": fetch_seconds, "preprocess": self.preprocess_seconds,
                   "inference": self.inference_seconds, "total": total_seconds}
        return {
            "score": self.score,
            "model": model,
            "sha1": self.sha1,
            "sha1_base36": self.sha1_base36,
            "bytes": self.size,
            "source": source,
            "frames": self.frames_json(),
            "timings_ms": {k: round(v * 1000, 3) for k, v in timings.items() if v is not None},
        }


def log_scored(scored: Scored, source: str) -> None:
    get_logger().info(
        "scored",
        **{"file.hash.sha1": scored.sha1, "file.size": scored.size, "nsfwoid.score": scored.score,
           "nsfwoid.source": source, "nsfwoid.frames": len(scored.frame_scores)},
    )


@dataclass(frozen=True)
class Scorer:
    """The decode workers and the micro-batcher in front of one model, with the settings that bound them."""

    settings: Settings
    decode_pool: DecodePool
    batcher: Batcher

    async def score(self, data: bytes, *, exact: bool | None = None, deadline: float | None = None,
                    sha1: str | None = None) -> Scored:
        """Score image bytes. `deadline` (loop time) caps the decode below NSFWOID_DECODE_TIMEOUT.

        `sha1`: the bytes' hex SHA-1, when the caller has it already.
        """
        settings = self.settings
        timeout = settings.decode_timeout
        if deadline is not None:
            timeout = min(timeout, deadline - asyncio.get_running_loop().time())
        decoded = await self.decode_pool.decode(data, exact=settings.exact if exact is None else exact,
                                                timeout=timeout, sha1=sha1)
        frames = decoded.frames
        results = await self.batcher.score_many(list(frames.crops))
        frame_scores = tuple((index, round(value, SCORE_DECIMALS))
                             for index, (value, _) in zip(frames.indices, results, strict=True))
        scored = Scored(
            score=max(value for _, value in frame_scores),
            frame_scores=frame_scores,
            frame_count=frames.count,
            sha1=decoded.sha1,
            size=len(data),
            preprocess_seconds=decoded.seconds,
            inference_seconds=max(seconds for _, seconds in results),
        )
        metrics.PREPROCESS_DURATION.observe(scored.preprocess_seconds)
        metrics.FRAMES_SCORED.observe(len(frame_scores))
        metrics.SCORES.observe(scored.score)
        return scored


@asynccontextmanager
async def running_scorer(settings: Settings, run_batch: RunBatch,
                         on_failure: Callable[[str], None] = lambda reason: None) -> AsyncIterator[Scorer]:
    """A Scorer whose decode workers and batcher live as long as the block.

    On exit, queued inference is finished and the decode workers are killed. `run_batch` takes the model's
    float input; the batcher converts the workers' uint8 crops to it, in its inference thread. `on_failure`:
    called with the reason if decoding fails for good (the decode pool cannot start workers).
    """
    pool = DecodePool(settings, on_failure)
    try:
        await pool.start()
        async with Batcher(lambda crops: run_batch(imaging.model_input(crops)), max_batch=settings.max_batch,
                           wait_seconds=settings.batch_wait_ms / 1000,
                           parallel=settings.inference_run_count) as batcher:
            yield Scorer(settings, pool, batcher)
    finally:
        pool.close()


async def self_test(scorer: Scorer) -> float:
    """Score the built-in image through the whole path (a decode worker, the batcher, the model) and compare
    it with the reference: the service is not ready, and `nsfwoid score` does not start, until it passes."""
    try:
        scored = await scorer.score(await asyncio.to_thread(SELFTEST_IMAGE.read_bytes), exact=True)
    except Problem as problem:  # the limits cannot take even the built-in image, or no worker can start
        raise ModelError(f"self-test could not score its image: {problem.detail}") from None
    if abs(scored.score - SELFTEST_EXPECTED) > SELFTEST_TOLERANCE:
        raise ModelError(f"self-test scored {scored.score:.6f}, expected {SELFTEST_EXPECTED:.6f}")
    return scored.score
