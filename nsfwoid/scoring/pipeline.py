"""The one scoring path, `Pipeline.score(image)`: bytes → sampled frames' crops (decode workers) → batcher → score,
SHA-1, timings. The HTTP routes, the CLI and the start-up self-test all score through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import metrics
from ..config import Settings
from ..errors import Problem, WorkerLost
from ..logging import get_logger
from .batcher import Batcher
from .bf16 import MAX_LOGIT_DEVIATION, logit_deviation
from .model import Model, ModelError
from .sandbox import DecodePool
from .scored import SCORE_DECIMALS, Scored

SELFTEST_IMAGE = Path(__file__).with_name("selftest.png")
# Reference score of selftest.png (the fidelity fixture warm_flat.png) from the original Caffe weights.
SELFTEST_EXPECTED = 0.290647030
SELFTEST_TOLERANCE = 1e-4
# Tries of the self-test when its decode worker is killed from outside as it decodes (an OOM kill, an operator):
# the worker is replaced, and the image scored again.
SELFTEST_ATTEMPTS = 3


@dataclass(frozen=True)
class Pipeline:
    """The decode workers and the micro-batcher in front of one loaded model: `score(image)` runs them in order."""

    settings: Settings
    model: Model
    decode_pool: DecodePool
    batcher: Batcher

    async def score(self, data: bytes, *, source: str | None, exact: bool | None = None, deadline: float | None = None,
                    sha1: str | None = None) -> Scored:
        """Score image bytes: decode and preprocess (a worker), infer (the batcher), then the score and its log line.

        `source`: where the bytes came from, for the log line; None: no line (the self-test, whose score the
        start-up's own line carries). `deadline` (loop time) caps the decode below
        NSFWOID_DECODE_TIMEOUT. `sha1`: the bytes' hex SHA-1, when the caller has it already.
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
            model=self.model.identity,
            frame_scores=frame_scores,
            frame_count=frames.count,
            sha1=decoded.sha1,
            size=len(data),
            preprocess_seconds=decoded.seconds,
            inference_seconds=max(seconds for _, seconds in results),
        )
        metrics.PREPROCESS_DURATION.observe(scored.preprocess_seconds)
        metrics.STAGE_SECONDS["decode"].inc(decoded.cpu_seconds)
        metrics.FRAMES_SCORED.observe(len(frame_scores))
        metrics.SCORES.observe(scored.score)
        if source is not None:
            get_logger().info(
                "scored",
                **{"file.hash.sha1": scored.sha1, "file.size": scored.size, "nsfwoid.score": scored.score,
                   "nsfwoid.source": source, "nsfwoid.frames": len(scored.frame_scores)},
            )
        return scored


@asynccontextmanager
async def running_pipeline(settings: Settings, model: Model, decode_pool: DecodePool) -> AsyncIterator[Pipeline]:
    """The pipeline of a loaded model and a started decode pool; on exit, queued inference is finished."""
    async with Batcher(model.run_crops, max_batch=settings.max_batch, wait_seconds=settings.batch_wait_ms / 1000,
                       parallel=settings.inference_run_count) as batcher:
        yield Pipeline(settings, model, decode_pool, batcher)


async def self_test(pipeline: Pipeline) -> float:
    """Score the built-in image through the whole path (a decode worker, the batcher, the model) and compare
    it with the reference: the service is not ready, and `nsfwoid score` does not start, until it passes. A
    model run in bf16 is held to MAX_LOGIT_DEVIATION of the reference, fp32 to SELFTEST_TOLERANCE."""
    data = await asyncio.to_thread(SELFTEST_IMAGE.read_bytes)
    for attempt in range(1, SELFTEST_ATTEMPTS + 1):
        try:
            scored = await pipeline.score(data, source=None, exact=True)
            break
        except WorkerLost:  # killed from outside, and replaced: nothing the image or the model did
            if attempt == SELFTEST_ATTEMPTS:
                raise ModelError(f"self-test could not score its image: {SELFTEST_ATTEMPTS} decode workers in a "
                                 "row ended from outside as they decoded it") from None
        except Problem as problem:  # the limits cannot take even the built-in image, or no worker can start
            raise ModelError(f"self-test could not score its image: {problem.detail}") from None
    if pipeline.model.identity["precision"] == "bf16":
        passed = logit_deviation(scored.score, SELFTEST_EXPECTED) <= MAX_LOGIT_DEVIATION
    else:
        passed = abs(scored.score - SELFTEST_EXPECTED) <= SELFTEST_TOLERANCE
    if not passed:
        raise ModelError(f"self-test scored {scored.score:.6f}, expected {SELFTEST_EXPECTED:.6f}")
    return scored.score
