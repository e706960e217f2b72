"""Real nsfwoid processes for the tests: started, measured, and stood in for by a service that never answers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest


def service_processes(pid: int) -> list[psutil.Process]:
    """A service process and its decode workers (and the forkserver they are forked from)."""
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def decode_workers(pid: int) -> list[psutil.Process]:
    """The decode workers of a service or of a `nsfwoid score` run: the children of the forkserver, itself a
    child of the process."""
    workers = []
    with contextlib.suppress(psutil.NoSuchProcess):  # a process may end while it is looked at
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):
                workers.extend(child.children())
    return workers


def worker_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each process under the service, by pid."""
    seconds = {}
    for child in service_processes(pid)[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = child.cpu_times()
            seconds[child.pid] = times.user + times.system
    return seconds


def busy_workers(pid: int, seconds: float = 0.5) -> list[int]:
    """Workers that spent CPU time over the next `seconds`."""
    before = worker_cpu_seconds(pid)
    time.sleep(seconds)
    after = worker_cpu_seconds(pid)
    return [p for p, spent in after.items() if spent - before.get(p, spent) > 0.05]


def service_rss(pid: int) -> int:
    """RSS of a service and its workers together."""
    total = 0
    for process in service_processes(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


class PeakRss:
    """Samples the summed RSS of a service and its workers every 10 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._running = pid, 0, True
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self._running:
            with contextlib.suppress(psutil.NoSuchProcess):  # it ended before the block did
                self.peak = max(self.peak, service_rss(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._running = False
        self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HungService:
    """A service that accepts connections and never answers, counting the connections it was sent."""

    def __init__(self, port: int = 0):
        self.listener = socket.create_server(("127.0.0.1", port))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def connections(self) -> int:
        return len(self.held)

    def _accept(self):
        with contextlib.suppress(OSError):  # the listener was closed
            while True:
                self.held.append(self.listener.accept()[0])

    def __enter__(self) -> HungService:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self):
        self.listener.shutdown(socket.SHUT_RDWR)  # on Linux this, not close(), ends a blocked accept()
        self.thread.join(10)
        self.listener.close()
        for connection in self.held:
            connection.close()


def start_service(stdout=subprocess.DEVNULL, cpus: set[int] | None = None, port: int | None = None,
                  cwd: Path | None = None, command: tuple[str, ...] = (sys.executable, "-m", "nsfwoid"),
                  **env: str) -> tuple[subprocess.Popen, str]:
    """`nsfwoid serve` as a real process on a loopback port, healthy: (process, base URL).

    `cpus`: pin the process to these cores, as a CPU limit confines a pod. `port`: a free one if not given.
    `cwd`, `command`: where and how it is run (`python -m nsfwoid`, or the console script).
    """
    port = port or free_port()
    full_env = {**os.environ, "NSFWOID_HOST": "127.0.0.1", "NSFWOID_PORT": str(port),
                "NSFWOID_LOG_LEVEL": "warning", **env}
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    process = subprocess.Popen([*command, "serve"], env=full_env, preexec_fn=pin, cwd=cwd,
                               stdout=stdout, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return process, base
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("nsfwoid did not become healthy")


def require_root_and(tools: tuple[str, ...], what: str, needs: str) -> None:
    """Tests that need root and these commands: skipped without them, and failed where CI=true, since CI has them."""
    missing = "not root" if os.geteuid() != 0 else None
    absent = [tool for tool in tools if shutil.which(tool) is None]
    missing = missing or (f"{', '.join(absent)} not installed" if absent else None)
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, but {what} cannot run: {missing}; it needs {needs}")
    if missing:
        pytest.skip(f"{missing}: {what} needs {needs}")
