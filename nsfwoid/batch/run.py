"""`nsfwoid score` at scale: the run. Targets (targets.py) are read concurrently, downloaded politely and scored
by the service's pipeline; each outcome goes to the output (output.py) and the progress (progress.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import stat
import sys
import threading
from collections.abc import AsyncIterator, Iterator

import aiohttp

from .. import metrics
from ..config import Settings
from ..errors import (
    FileNotFound,
    FileUnreadable,
    MissingInput,
    Problem,
    ServiceFailed,
    UnsupportedMediaType,
    UpstreamBusy,
    check_size,
)
from ..fetch.download import create_session, fetch
from ..scoring.decode_worker import sha1_hex
from ..scoring.model import Model
from ..scoring.pipeline import Pipeline, running_pipeline, self_test
from ..scoring.sandbox import DecodePool
from ..scoring.scored import Scored
from .output import Output
from .progress import Progress, Tally
from .targets import BatchOptions, count_targets, resume_point, selected, to_do_again

RETRY_BASE_SECONDS = 1.0
RETRY_AFTER_CAP_SECONDS = 300.0
READ_AHEAD_LINES = 256


def read_file(path: str, cap: int) -> tuple[bytes, str]:
    """A local target: the file's bytes and their hex SHA-1, refused before reading when it is over the cap, or
    when it is no regular file (a FIFO with no writer would hold its open, and the run, forever). Blocking: its
    CPU time is counted as intake's, as the service counts reading a request's input."""
    with metrics.stage_cpu("intake"):
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as stream:
            status = os.fstat(stream.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise UnsupportedMediaType("not a regular file")
            size = status.st_size
            if size == 0:
                raise MissingInput("the file is empty")
            check_size(size, cap, "the file")
            data = stream.read(cap + 1)
        return data, sha1_hex(data)


def detached(problem: Problem) -> Problem:
    """The problem without the tracebacks of it and of the exceptions it was raised from. A run keeps one
    problem per SHA-1 until it ends, and those tracebacks' frames hold the image's bytes."""
    problem.__cause__ = problem.__context__ = None
    return problem.with_traceback(None)


async def read_ahead(targets: Iterator[str]) -> AsyncIterator[list[str]]:
    """The targets, READ_AHEAD_LINES at a time, read in a daemon thread of their own: a list that may never end
    (a FIFO with no writer, standard input held open) must not keep the process alive once the run is stopped,
    as a thread of asyncio's executor would, since asyncio.run waits for those."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[list[str] | BaseException] = asyncio.Queue(maxsize=2)

    def hand_over(item: list[str] | BaseException) -> None:
        asyncio.run_coroutine_threadsafe(chunks.put(item), loop).result()

    def read() -> None:
        try:
            while chunk := list(itertools.islice(targets, READ_AHEAD_LINES)):
                hand_over(chunk)
            hand_over([])
        except BaseException as exc:  # raised again in the run, where it is reported
            hand_over(exc)

    threading.Thread(target=read, name="nsfwoid-targets", daemon=True).start()
    while chunk := await chunks.get():
        if isinstance(chunk, BaseException):
            raise chunk
        yield chunk


class Run:
    """One run: the shared session, the pipeline, per-run caches and the output."""

    def __init__(self, settings: Settings, options: BatchOptions, session: aiohttp.ClientSession, pipeline: Pipeline,
                 output: Output) -> None:
        self.settings, self.options, self.session, self.pipeline = settings, options, session, pipeline
        self.output, self.tally, self.progress = output, output.tally, output.progress
        # Identical bytes are scored once per run: SHA-1 → the task scoring them, then its result or problem.
        self.by_sha1: dict[str, asyncio.Future | Scored | Problem] = {}

    async def run(self, targets: Iterator[str], finished: dict[str, int]) -> None:
        """Score the targets. What ends the run early (OutputFailed, ServiceFailed) stops every task at once, and
        is raised as itself."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=2 * self.options.concurrency)
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.options.concurrency):
                    group.create_task(self._worker(queue))
                group.create_task(self._feed(targets, finished, queue))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None

    async def _feed(self, targets: Iterator[str], finished: dict[str, int], queue: asyncio.Queue) -> None:
        async for chunk in read_ahead(targets):
            for target in chunk:
                status = finished.get(target)
                if status is not None:
                    if not to_do_again(status, self.options.retry_failed):
                        self.tally.skipped += 1
                        self.progress.update(skipped=True)
                        continue
                    self.tally.retried += 1
                await queue.put(target)
        for _ in range(self.options.concurrency):
            await queue.put(None)

    async def _worker(self, queue: asyncio.Queue) -> None:
        while (target := await queue.get()) is not None:
            await self.one(target)

    async def one(self, target: str) -> None:
        """Score one target, and write its line."""
        outcome = await self._outcome(target)
        # Counted once written: a run stopped by a full disk counts only what its output holds.
        if isinstance(outcome, Problem):
            self.output.error(target, outcome)
            self.tally.errors[outcome.name] += 1
        else:
            self.output.result(target, outcome)
            self.tally.scored += 1
        self.progress.update()

    async def _outcome(self, target: str) -> Scored | Problem:
        try:
            data, sha1 = await self._read(target)
        except Problem as problem:
            return problem
        known = self.by_sha1.get(sha1)
        if known is not None:
            self.tally.duplicates += 1
            return await asyncio.shield(known) if isinstance(known, asyncio.Future) else known
        task = asyncio.ensure_future(self._score(data, sha1, "url" if "://" in target else "file"))
        self.by_sha1[sha1] = task
        self.by_sha1[sha1] = outcome = await asyncio.shield(task)
        return outcome

    async def _score(self, data: bytes, sha1: str, source: str) -> Scored | Problem:
        try:
            return await self.pipeline.score(data, source=source, sha1=sha1)
        except ServiceFailed:
            raise  # no target can be scored: the run ends
        except Problem as problem:
            return detached(problem)

    async def _read(self, target: str) -> tuple[bytes, str]:
        """The target's bytes and their hex SHA-1, hashed off the event loop."""
        if "://" in target:
            data = await self._download(target)
            return data, await asyncio.to_thread(sha1_hex, data)
        try:
            return await asyncio.to_thread(read_file, target, self.settings.max_image_bytes)
        except FileNotFoundError:
            raise FileNotFound(f"no such file: {target}") from None
        except OSError as exc:
            what = "the directory " if os.path.isdir(target) else ""
            raise FileUnreadable(f"cannot read {what}{target}: {exc.strerror or exc}") from None

    async def _download(self, url: str) -> bytes:
        """Retries 429 and 503 with exponential backoff, honouring Retry-After."""
        for attempt in itertools.count():
            try:
                return await fetch(self.session, url, self.settings)
            except UpstreamBusy as busy:
                if attempt >= self.options.retries:
                    raise
                backoff = RETRY_BASE_SECONDS * 2**attempt
                wait = min(busy.retry_after, RETRY_AFTER_CAP_SECONDS) if busy.retry_after is not None else backoff
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")


async def score_batch(settings: Settings, options: BatchOptions, model: Model) -> int:
    """Score every selected target; 0 when all were scored, 1 when some failed.

    Raises ModelError, before any target is read, when the self-test fails.
    """
    finished = resume_point(options.output, options.jsonl) if options.resume and options.output else {}
    if options.output:
        out = options.output.open("a", encoding="utf-8", errors="surrogateescape")
    else:
        sys.stdout.reconfigure(errors="surrogateescape")
        out = sys.stdout
    tally = None
    stop_counting = threading.Event()
    try:
        async with (
            create_session(settings, connections=options.concurrency, per_host=options.per_host) as session,
            DecodePool(settings) as pool,
            running_pipeline(settings, model, pool) as pipeline,
        ):
            await self_test(pipeline)
            # Counted from here, as the service is ready from here: the model and the decode workers are up.
            tally = Tally()
            progress = Progress(tally, sys.stderr, options.progress_every)
            counting = asyncio.ensure_future(asyncio.to_thread(count_targets, options, stop_counting))
            counting.add_done_callback(lambda task: task.cancelled() or progress.set_total(task.result()))
            output = Output(options, out, tally, progress)
            run = Run(settings, options, session, pipeline, output)
            try:
                await run.run(selected(options), finished)
                await counting  # the total, for the summary
            finally:
                output.close()
                progress.close()
    finally:
        stop_counting.set()
        if out is not sys.stdout:
            with contextlib.suppress(OSError):  # only a failed write, reported already, leaves a line to flush
                out.close()
        if tally is not None:  # also when the run was stopped
            print(tally.summary(), file=sys.stderr, flush=True)
    return 1 if tally.failed else 0
