"""Async micro-batcher in front of Model.run_crops: up to max_batch queued crops go into one model run, and up to
`parallel` runs go at once, each on an inference thread of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import metrics

RunBatch = Callable[[list[np.ndarray]], np.ndarray]
_STOP = None


class Batcher:
    def __init__(self, run_batch: RunBatch, *, max_batch: int, wait_seconds: float, parallel: int = 1) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._wait_seconds = wait_seconds
        self._queue: asyncio.Queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="nsfwoid-inference")
        self._free_threads = asyncio.Semaphore(parallel)
        self._runs: set[asyncio.Task] = set()
        self._worker: asyncio.Task | None = None

    async def __aenter__(self) -> Batcher:
        self._worker = asyncio.create_task(self._work(), name="nsfwoid-batcher")
        return self

    async def __aexit__(self, *exc_info) -> None:
        """Scores everything already queued, then stops."""
        await self._queue.put(_STOP)
        await self._worker
        self._executor.shutdown(wait=True)

    async def score_many(self, tensors: Sequence[np.ndarray]) -> list[tuple[float, float]]:
        """Queue the tensors together (the frames of one image), so that they share model runs."""
        if self._worker is None or self._worker.done():
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in tensors]
        for tensor, future in zip(tensors, futures, strict=True):
            self._queue.put_nowait((tensor, future))
        try:
            return [await future for future in futures]
        finally:
            for future in futures:  # when the caller gave up: drop what is still queued
                future.cancel()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            await self._free_threads.acquire()  # collect a batch only when a thread can run it at once
            first = await self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = loop.time() + self._wait_seconds
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            run = asyncio.create_task(self._run(loop, [(t, f) for t, f in batch if not f.done()]))
            self._runs.add(run)
            run.add_done_callback(self._ran)
        await asyncio.gather(*self._runs)

    def _ran(self, run: asyncio.Task) -> None:
        self._runs.discard(run)
        self._free_threads.release()

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list) -> None:
        if not batch:
            return
        tensors = [tensor for tensor, _ in batch]
        started = time.perf_counter()
        try:
            # Stacking copies megabytes: run_batch does it on the inference thread, not on the event loop.
            scores = await loop.run_in_executor(self._executor, self._run_batch, tensors)
        except Exception as exc:  # a model failure is ours, not the client's: it becomes a 500
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        seconds = time.perf_counter() - started
        metrics.INFERENCE_DURATION.observe(seconds)
        metrics.BATCH_SIZE.observe(len(batch))
        for (_, future), score in zip(batch, scores, strict=True):
            if not future.done():
                future.set_result((float(score), seconds))
