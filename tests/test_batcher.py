"""Micro-batching: concurrent requests share model runs, and batched scores equal unbatched ones."""

import asyncio
import threading

import numpy as np
import pytest

from nsfwoid.scoring.batcher import Batcher

from . import reference


def stacking(run):
    """A model run over a list of queued tensors, as the batcher hands them over."""
    return lambda tensors: run(np.stack(tensors))


async def test_batched_scores_equal_unbatched(model):
    inputs = reference.fixture_tensors()
    sizes = []

    def run(batch):
        sizes.append(len(batch))
        return model.run(np.stack(batch))

    async with Batcher(run, max_batch=8, wait_seconds=0.2) as batcher:
        results = await asyncio.gather(*(reference.score_one(batcher, t) for t in inputs))
    one_by_one = [model.run(t[None])[0] for t in inputs]
    assert max(sizes) == 8 and sum(sizes) == len(inputs)  # 11 inputs: a batch of 8, then 3
    np.testing.assert_allclose([score for score, _ in results], one_by_one, rtol=0, atol=1e-6)


async def test_a_lone_request_waits_at_most_batch_wait(model):
    async with Batcher(stacking(model.run), max_batch=32, wait_seconds=0.05) as batcher:
        loop = asyncio.get_running_loop()
        started = loop.time()
        score, seconds = await reference.score_one(batcher, reference.fixture_tensors()[0])
        assert loop.time() - started < 0.05 + seconds + 0.5
        assert 0 <= score <= 1


async def test_queued_work_is_finished_on_exit(model):
    inputs = reference.fixture_tensors()[:5]
    async with Batcher(stacking(model.run), max_batch=2, wait_seconds=0) as batcher:
        pending = [asyncio.create_task(reference.score_one(batcher, t)) for t in inputs]
        await asyncio.sleep(0)
    assert all(task.done() and 0 <= task.result()[0] <= 1 for task in pending)


async def test_model_failure_reaches_every_waiter():
    def broken(batch):
        raise RuntimeError("boom")

    async with Batcher(broken, max_batch=4, wait_seconds=0.01) as batcher:
        scored = (reference.score_one(batcher, t) for t in reference.fixture_tensors()[:3])
        results = await asyncio.gather(*scored, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


@pytest.mark.parametrize("parallel", [1, 2])
async def test_parallel_runs_go_at_once(parallel):
    # Two batches of one, each waiting in the model for the other: only two inference threads let both
    # through the barrier; with one, the first run waits alone until the barrier breaks.
    barrier = threading.Barrier(2, timeout=2)

    def run(batch):
        barrier.wait()
        return np.full(len(batch), 0.5, dtype=np.float32)

    async with Batcher(run, max_batch=1, wait_seconds=0, parallel=parallel) as batcher:
        scored = (reference.score_one(batcher, t) for t in reference.fixture_tensors()[:2])
        results = await asyncio.gather(*scored, return_exceptions=True)
    if parallel == 2:
        assert [score for score, _ in results] == [0.5, 0.5]
    else:
        assert all(isinstance(r, threading.BrokenBarrierError) for r in results)
