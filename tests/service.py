"""`nsfwoid serve` as a real process on a free loopback port, for tests that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(stdout=subprocess.DEVNULL, **env: str) -> tuple[subprocess.Popen, str]:
    """Start the service and wait until /healthz says 200: (process, base URL)."""
    port = free_port()
    full_env = {**os.environ, "NSFWOID_HOST": "127.0.0.1", "NSFWOID_PORT": str(port),
                "NSFWOID_LOG_LEVEL": "warning", **env}
    process = subprocess.Popen([sys.executable, "-m", "nsfwoid", "serve"], env=full_env,
                               stdout=stdout, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return process, base
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("nsfwoid did not become healthy")
