"""Decoding in killable worker processes, as Thumbor does: a hostile file costs one worker, never the service.

Each worker has an address-space limit (NSFWOID_DECODE_MEMORY) and each decode a wall-time limit
(NSFWOID_DECODE_TIMEOUT, never past the request's deadline). pebble kills a worker that runs past its time, that
is cancelled because its request was answered or abandoned, or that the pool stops; it replaces a worker that
dies, a codec's segfault included.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing
import multiprocessing.forkserver
import os
import resource
import signal
import time
from collections.abc import Iterator
from concurrent.futures import TimeoutError as DecodeTimeout
from dataclasses import dataclass
from multiprocessing import resource_tracker

import pebble

from . import imaging
from .config import Settings
from .errors import ImageTooLarge, InvalidImage

# What a worker's address space holds before it decodes anything: Python, numpy, Pillow (about 135 MiB).
WORKER_BASELINE_BYTES = 192 * 2**20


@dataclass(frozen=True)
class Decoded:
    frames: imaging.Frames
    sha1: str
    seconds: float


def sha1_hex(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _start_worker(max_pixels: int, memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # libtiff and libpng write warnings straight to file descriptor 2, which would put lines that are not
    # ECS JSON in the service's log. A worker's errors reach the parent as exceptions instead.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    imaging.configure_pillow(max_pixels)


def _decode(data: bytes, *, max_pixels: int, exact: bool, max_frames: int, memory_budget: int,
            sha1: str | None) -> Decoded:
    """Runs in a worker: the sampled frames' crops, the hex SHA-1 of the bytes, the seconds spent."""
    started = time.perf_counter()
    frames = imaging.to_frames(data, max_pixels=max_pixels, exact=exact, max_frames=max_frames,
                               memory_budget=memory_budget)
    return Decoded(frames, sha1 or sha1_hex(data), time.perf_counter() - started)


# pebble's channel locks are named POSIX semaphores, as workers forked from the forkserver open them by name.
# Python's resource tracker removes them when the process ends. After a SIGKILL, which leaves no time to
# unregister them, it removes them all the same, but says "resource_tracker: There appear to be 2 leaked
# semaphore objects to clean up at shutdown": noise, since nothing is left behind. This warning is its only one.
QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """These variables set for the processes started inside, and restored after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def _start_helper_processes() -> None:
    """Start the resource tracker, quiet after a SIGKILL (QUIET_TRACKER), and the server that decode workers are
    forked from, with numpy's OpenBLAS held to one thread.

    OpenBLAS maps a stack and a buffer, about 40 MiB of address space, for each core it may run on (a pod with a
    CPU limit sees all its node's cores) as numpy is imported. Every worker inherits them, though it never
    multiplies a matrix: on 16 cores, 750 MiB of the 768 MiB that NSFWOID_DECODE_MEMORY allows, and on 64 more
    than all of it (measured with faked core counts). With one thread, a worker starts at about 135 MiB.
    """
    warnings = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"), QUIET_TRACKER)))
    with _environment(OPENBLAS_NUM_THREADS="1", PYTHONWARNINGS=warnings):
        resource_tracker.ensure_running()
        multiprocessing.forkserver.ensure_running()


class DecodePool:
    """A pebble process pool of decode workers, one per core unless NSFWOID_DECODE_WORKERS says otherwise."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # forkserver: workers start small (numpy and Pillow, about 50 MiB), not as copies of a process that
        # holds onnxruntime and the model; and quickly, forked from a server that has imported them once.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["nsfwoid.imaging", "nsfwoid.sandbox"])
        _start_helper_processes()
        self._pool = pebble.ProcessPool(
            max_workers=settings.decode_worker_count,
            initializer=_start_worker,
            initargs=(settings.max_pixels, settings.decode_memory),
            context=context,
        )

    async def decode(self, data: bytes, *, exact: bool, timeout: float, sha1: str | None = None) -> Decoded:
        """Decode in a worker within `timeout` seconds. Cancelling the awaiting task kills the worker."""
        settings = self._settings
        timeout = max(timeout, 0.001)  # a request whose deadline has passed gets its 503 from the route
        future = self._pool.schedule(
            _decode, args=(data,), timeout=timeout,
            kwargs={"max_pixels": settings.max_pixels, "exact": exact, "max_frames": settings.max_frames,
                    "memory_budget": settings.decode_memory - WORKER_BASELINE_BYTES, "sha1": sha1},
        )
        try:
            return await asyncio.wrap_future(future)
        except DecodeTimeout:
            raise ImageTooLarge(f"decoding took longer than {timeout:.1f} s") from None
        except MemoryError:
            raise ImageTooLarge(f"decoding needs more than the {settings.decode_memory // 2**20} MiB a decode "
                                "worker may use") from None
        except pebble.ProcessExpired as exc:
            raise InvalidImage(f"the decoder crashed on this image (exit code {exc.exitcode})") from None

    def close(self) -> None:
        """Kill the workers at once: what they decode has no one waiting for it any more."""
        self._pool.stop()
        self._pool.join()
