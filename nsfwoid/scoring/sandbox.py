"""Decoding in killable worker processes, as Thumbor does: a hostile file costs one worker, never the service.

Each worker has an address-space limit (NSFWOID_DECODE_MEMORY) and each decode a wall-time limit
(NSFWOID_DECODE_TIMEOUT, never past the request's deadline). A worker that runs past its time, whose request was
answered or abandoned, or that is stopped (SIGSTOP, a freezer) is killed; one that dies, a codec's segfault or a
kill from outside (the OOM killer, an operator), is replaced. Each worker has its own pipe (decode_worker.py), so
a death costs at most the request that worker was serving: an idle worker's costs none.

Workers that cannot be started at all (FAILED_STARTS in a row) leave the pool failed: `failure` says why, the
service's /healthz reports it, and decoding answers 503 `service-failed` at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import multiprocessing
import multiprocessing.forkserver
import os
import signal
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection

from .. import metrics
from ..config import Settings
from ..errors import ImageTooLarge, InvalidImage, ServiceFailed, WorkerLost
from ..logging import get_logger
from . import decode_worker
from .decode_worker import READY, TAKEN, Decoded, serve, sha1_hex

__all__ = ["WORKER_BASELINE_BYTES", "DecodePool", "Decoded", "sha1_hex"]

# What a worker's address space may hold before it decodes anything: Python, numpy, Pillow. A new worker stays
# under it (tests/test_sandbox.py); a decode gets NSFWOID_DECODE_MEMORY less this (docs/operations.md, Sizing).
WORKER_BASELINE_BYTES = 192 * 2**20
START_TIMEOUT_SECONDS = 30  # for a new worker's READY
FAILED_STARTS = 3  # starts in a row that fail before the pool is failed
# A worker ended by one of these while it decoded: the image crashed a codec. Any other end is from outside.
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT})


class Cause(enum.StrEnum):
    """Why a worker was replaced: the `cause` label of nsfwoid_decode_workers_replaced_total."""

    TIMEOUT = "timeout"  # the pool's own limit: it decoded past its time
    CANCELLED = "cancelled"  # the pool's own limit: its request was answered or abandoned
    CRASH = "crash"  # a codec crashed on the image it decoded (CRASH_SIGNALS)
    OUTSIDE = "outside"  # killed, stopped or ended from outside: the OOM killer, an operator


class Ended(enum.Enum):
    """How a worker ended without answering a task."""

    BEFORE_TAKING = "before it took the task"  # idle, or dead by the time the task came: the task is unharmed
    WHILE_SERVING = "while it served the task"


class StartFailed(Exception):
    """A new worker died, or said nothing, before it was ready."""


class Worker:
    """One decode worker process and the service's end of its pipe."""

    def __init__(self, process: multiprocessing.process.BaseProcess, connection: Connection) -> None:
        self.process, self.connection = process, connection

    @property
    def pid(self) -> int:
        return self.process.pid

    def stopped(self) -> bool:
        """Whether a signal stopped it (SIGSTOP, a cgroup freezer): Linux's process state T."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as stat:
                return stat.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t")
        except (OSError, IndexError):
            return False

    def kill(self) -> None:
        with contextlib.suppress(OSError):  # ended already
            os.kill(self.pid, signal.SIGKILL)  # a stopped process dies of it too

    def reap(self) -> int | None:
        """Wait for its end (the forkserver reports its exit code): negative for a signal."""
        self.process.join(10)
        return self.process.exitcode

    def exchange(self, function: Callable, data: bytes, kwargs: dict) -> tuple[bool, object] | Ended:
        """Run one task (in a thread: every step may block): (True, result), (False, exception), or how the
        worker ended without an answer. A stopped worker is not given it: another worker can take it."""
        if self.stopped():
            return Ended.BEFORE_TAKING
        with metrics.stage_cpu("exchange"):
            try:
                self.connection.send((function, kwargs))
                self.connection.send_bytes(data)
                if self.connection.recv_bytes() != TAKEN:
                    raise EOFError
            except (EOFError, OSError):
                return Ended.BEFORE_TAKING  # it ended before it had the task: another worker can take it
            try:
                return self.connection.recv()
            except (EOFError, OSError):
                return Ended.WHILE_SERVING


# The forkserver's environment, and so its workers'.
FORKSERVER_ENVIRONMENT = {
    # OpenBLAS maps a stack and a buffer, about 40 MiB of address space, for each core it may run on (a pod with
    # a CPU limit sees all its node's cores) as numpy is imported. Every worker inherits them, though it never
    # multiplies a matrix: on 16 cores, 750 MiB of the 768 MiB that NSFWOID_DECODE_MEMORY allows, and on 64 more
    # than all of it (measured with faked core counts). With one thread, a worker starts under
    # WORKER_BASELINE_BYTES on any number of cores.
    "OPENBLAS_NUM_THREADS": "1",
    # The forkserver is started as `python -c`, which would put the working directory first on its path: run
    # where a folder is called nsfwoid (a checkout's parent), it would import that folder as the package, and
    # every worker would inherit it and die. Python 3.11's PYTHONSAFEPATH leaves it off.
    "PYTHONSAFEPATH": "1",
}


def _start_forkserver() -> None:
    """Start the server that decode workers are forked from, in FORKSERVER_ENVIRONMENT; this process's own
    environment is as it was after."""
    saved = {name: os.environ.get(name) for name in FORKSERVER_ENVIRONMENT}
    os.environ.update(FORKSERVER_ENVIRONMENT)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


class DecodePool:
    """Decode workers, one per core unless NSFWOID_DECODE_WORKERS says otherwise, each replaced when it ends.

    `on_failure(reason)` is called once if the pool fails (FAILED_STARTS starts in a row fail).
    """

    def __init__(self, settings: Settings, on_failure: Callable[[str], None] = lambda reason: None) -> None:
        self._settings, self._on_failure = settings, on_failure
        # forkserver: workers start small (numpy and Pillow), not as copies of a process that
        # holds onnxruntime and the model; and quickly, forked from a server that has imported them once. They
        # inherit none of the service's descriptors, so each worker's pipe is open in that worker alone.
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["nsfwoid.scoring.imaging", "nsfwoid.scoring.decode_worker"])
        self._size = settings.decode_worker_count
        # Each worker's exchange, and each start, blocks a thread: the event loop never waits on a pipe.
        self._threads = ThreadPoolExecutor(max_workers=2 * self._size + 1, thread_name_prefix="nsfwoid-decode")
        self._live: set[Worker] = set()
        self._idle: collections.deque[Worker] = collections.deque()
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task] = set()
        self._failed_starts = 0
        self._closed = False
        self.failure: str | None = None

    async def __aenter__(self) -> DecodePool:
        """Start the workers; back once each is ready, or the pool has failed."""
        try:
            await asyncio.to_thread(_start_forkserver)
            await asyncio.gather(*(self._add_worker() for _ in range(self._size)))
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.close()

    async def decode(self, data: bytes, *, exact: bool, timeout: float, sha1: str | None = None) -> Decoded:
        """Decode in a worker within `timeout` seconds. Cancelling the awaiting task kills the worker."""
        settings = self._settings
        timeout = max(timeout, 0.001)  # a request whose deadline has passed gets its 503 from the route
        try:
            return await self.run(decode_worker.decode, data, timeout=timeout,
                                  max_pixels=settings.max_pixels, exact=exact, max_frames=settings.max_frames,
                                  memory_budget=settings.decode_memory - WORKER_BASELINE_BYTES, sha1=sha1)
        except MemoryError:
            raise ImageTooLarge(f"decoding needs more than the {settings.decode_memory // 2**20} MiB a decode "
                                "worker may use") from None

    async def run(self, function: Callable, data: bytes, *, timeout: float, **kwargs) -> object:
        """`function(data, **kwargs)` in a worker, within `timeout` seconds: its result, or what it raised.

        A worker found dead or stopped before it took the task (killed or stopped while idle, its end not yet
        reported) costs the task nothing: it is replaced, and the next worker takes the task.
        """
        for _ in range(self._size + 1):
            worker = await self._take()
            outcome = await self._attempt(worker, function, data, kwargs, timeout)
            if outcome is not Ended.BEFORE_TAKING:
                return outcome
            self._retire_later(worker, Cause.OUTSIDE)
        raise WorkerLost(f"{self._size + 1} decode workers in a row ended before they took the image")

    async def _attempt(self, worker: Worker, function: Callable, data: bytes, kwargs: dict,
                       timeout: float) -> object:
        """The task's result from this worker, or Ended.BEFORE_TAKING: the worker was gone before it took it."""
        exchange = asyncio.get_running_loop().run_in_executor(self._threads, worker.exchange, function, data,
                                                                  kwargs)
        try:
            async with asyncio.timeout(timeout):
                outcome = await exchange
        except TimeoutError:
            if worker.stopped():
                self._retire_later(worker, Cause.OUTSIDE)
                raise WorkerLost(f"the decode worker was stopped from outside (pid {worker.pid}); it has been "
                                 "replaced") from None
            self._retire_later(worker, Cause.TIMEOUT)
            raise ImageTooLarge(f"decoding took longer than {timeout:.1f} s") from None
        except asyncio.CancelledError:
            self._retire_later(worker, Cause.CANCELLED)
            raise
        if outcome is Ended.BEFORE_TAKING:
            return outcome
        if outcome is Ended.WHILE_SERVING:
            cause, exitcode = await asyncio.shield(self._retire_later(worker, None))
            if cause is Cause.CRASH:
                raise InvalidImage(f"the decoder crashed on this image ({signal.Signals(-exitcode).name})")
            raise WorkerLost(f"the decode worker ended from outside (pid {worker.pid}, {_ending(exitcode)}); it "
                             "has been replaced")
        await self._release(worker)
        succeeded, value = outcome
        if succeeded:
            return value
        raise value

    async def _take(self) -> Worker:
        """An idle worker; one that has ended or stopped meanwhile is found by its exchange (Ended.BEFORE_TAKING)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._idle or self.failure)
            if self.failure:
                raise ServiceFailed(self.failure)
            return self._idle.popleft()

    async def _release(self, worker: Worker) -> None:
        self._idle.append(worker)
        async with self._changed:
            self._changed.notify()

    async def _add_worker(self) -> None:
        """Start a worker and make it idle; retried with backoff, up to FAILED_STARTS failures in a row."""
        loop = asyncio.get_running_loop()
        while not self._closed and self.failure is None:
            try:
                worker = await loop.run_in_executor(self._threads, self._spawn)
            except (StartFailed, RuntimeError) as exc:  # RuntimeError: no thread could be started for it
                self._failed_starts += 1
                get_logger().error("decode worker failed to start", **{"error.message": str(exc)})
                if self._failed_starts >= FAILED_STARTS:
                    await self._fail(f"decode workers cannot start: {exc}")
                    return
                await asyncio.sleep(0.1 * 2**self._failed_starts)
                continue
            if self._closed:
                worker.kill()
                return
            self._failed_starts = 0
            self._live.add(worker)
            metrics.DECODE_WORKERS.set(len(self._live))
            loop.add_reader(worker.process.sentinel, self._ended, worker)
            await self._release(worker)
            return

    def _spawn(self) -> Worker:
        try:
            ours, theirs = self._context.Pipe()
        except OSError as exc:
            raise StartFailed(f"cannot open a pipe: {exc}") from None
        process = self._context.Process(target=serve, name="nsfwoid-decode", daemon=True,
                                        args=(theirs, self._settings.max_pixels, self._settings.decode_memory))
        try:
            process.start()
        except (OSError, EOFError) as exc:  # EOFError: the forkserver could not fork, and ended
            ours.close()
            raise StartFailed(f"cannot start a process: {exc or type(exc).__name__}") from None
        finally:
            theirs.close()  # the worker's end is open in the worker alone: its death is our end's EOF
        worker = Worker(process, ours)
        try:
            if ours.poll(START_TIMEOUT_SECONDS) and ours.recv() == READY:
                return worker
            reason = f"not ready within {START_TIMEOUT_SECONDS} s"
        except (EOFError, OSError):
            reason = f"it ended as it started ({_ending(worker.reap())})"
        worker.kill()
        worker.reap()
        raise StartFailed(reason)

    def _ended(self, worker: Worker) -> None:
        """The worker's process ended (its sentinel is readable). If idle, replace it now: no request pays for
        it. A busy worker's end is its exchange's to report."""
        asyncio.get_running_loop().remove_reader(worker.process.sentinel)
        if worker in self._idle:
            self._idle.remove(worker)
            self._retire_later(worker, Cause.OUTSIDE)

    def _retire_later(self, worker: Worker, cause: Cause | None) -> asyncio.Task:
        """Kill and reap the worker, count it, and start its replacement, in a task of the pool's own: a
        cancelled request cannot stop it half-way. `cause` None: judged by how it ended (crash or outside)."""
        return self._background(self._retire(worker, cause))

    async def _retire(self, worker: Worker, cause: Cause | None) -> tuple[Cause, int | None]:
        if worker not in self._live:
            return cause or Cause.OUTSIDE, worker.process.exitcode
        self._live.discard(worker)
        with contextlib.suppress(ValueError):
            self._idle.remove(worker)
        asyncio.get_running_loop().remove_reader(worker.process.sentinel)
        metrics.DECODE_WORKERS.set(len(self._live))
        if cause is not None:
            worker.kill()
        try:
            exitcode = await asyncio.get_running_loop().run_in_executor(self._threads, worker.reap)
        except RuntimeError:  # no thread could be started to wait for it: the pod is at its limit of tasks
            exitcode = worker.process.exitcode
        if cause is None:
            crashed = exitcode is not None and exitcode < 0 and -exitcode in CRASH_SIGNALS
            cause = Cause.CRASH if crashed else Cause.OUTSIDE
        metrics.DECODE_WORKERS_REPLACED.labels(cause.value).inc()
        log = get_logger().warning if cause is Cause.OUTSIDE else get_logger().info
        log("decode worker replaced", **{"process.pid": worker.pid, "nsfwoid.cause": cause.value,
                                         "process.exit_code": exitcode})
        if not self._closed:
            self._background(self._add_worker())
        return cause, exitcode

    async def _fail(self, reason: str) -> None:
        self.failure = reason
        get_logger().critical("decoding failed", **{"error.message": reason})
        self._on_failure(reason)
        async with self._changed:
            self._changed.notify_all()

    def _background(self, coroutine: Coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def close(self) -> None:
        """Kill the workers at once: what they decode has no one waiting for it any more."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        loop = asyncio.get_running_loop()
        for worker in self._live:
            loop.remove_reader(worker.process.sentinel)
            worker.kill()
        for worker in self._live:
            worker.reap()
        self._live.clear()
        self._idle.clear()
        metrics.DECODE_WORKERS.set(0)
        self._threads.shutdown(wait=False, cancel_futures=True)


def _ending(exitcode: int | None) -> str:
    """How a process ended, in words: "SIGKILL", "exit code 1"."""
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-exitcode).name
    return f"exit code {exitcode}"
