"""A decode worker's side of the sandbox: limits set once, then one task at a time from its own pipe.

Each worker has a pipe of its own to the service, shared with no other process and guarded by no lock, so a
worker that dies, whenever and however, takes nothing of the others' with it. It imports the decoder and the
error taxonomy, never the HTTP layer or the metrics.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from . import imaging

READY = "ready"  # a worker's first message, once its limits are set
TAKEN = b"taken"  # sent as soon as a task has arrived whole: a worker that ends before it never had the task


@dataclass(frozen=True)
class Decoded:
    frames: imaging.Frames
    sha1: str
    seconds: float
    cpu_seconds: float  # the worker's, decoding and preprocessing


def sha1_hex(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def decode(data: bytes, *, max_pixels: int, exact: bool, max_frames: int, memory_budget: int,
           sha1: str | None) -> Decoded:
    """The sampled frames' crops, the hex SHA-1 of the bytes, the seconds spent."""
    started, cpu_started = time.perf_counter(), time.process_time()
    frames = imaging.to_frames(data, max_pixels=max_pixels, exact=exact, max_frames=max_frames,
                               memory_budget=memory_budget)
    sha1 = sha1 or sha1_hex(data)
    return Decoded(frames, sha1, time.perf_counter() - started, time.process_time() - cpu_started)


def _set_limits(max_pixels: int, memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # libtiff and libpng write warnings straight to file descriptor 2, which would put lines that are not
    # ECS JSON in the service's log. A worker's errors reach the parent as exceptions instead.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    imaging.configure_pillow(max_pixels)


def serve(connection: Connection, max_pixels: int, memory_bytes: int) -> None:
    """The worker's life: set the limits, say READY, then for each task (a function and its keyword
    arguments, then the bytes it takes) say TAKEN, and send back (True, result) or (False, the exception)."""
    _set_limits(max_pixels, memory_bytes)
    connection.send(READY)
    while True:
        try:
            function, kwargs = connection.recv()
            data = connection.recv_bytes()
        except EOFError:  # the service closed the pipe: nothing more to do
            return
        connection.send_bytes(TAKEN)
        outcome = _outcome(function, data, kwargs)
        try:
            connection.send(outcome)  # pickled whole before a byte is written
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            connection.send((False, RuntimeError(f"the worker's answer cannot be sent: {exc}")))


def _outcome(function: Callable, data: bytes, kwargs: dict) -> tuple[bool, object]:
    try:
        return True, function(data, **kwargs)
    except Exception as exc:
        exc.__traceback__ = None
        return False, exc
