"""The one Settings object: defaults, then NSFWOID_* environment variables, then CLI flags."""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "NSFWOID_"
MiB = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
# Settings whose value is one of a few words: checked here, for variables and flags alike (choice_error).
PRECISIONS = ("fp32", "bf16")
CHOICES = {"log_format": LOG_FORMATS, "log_level": LOG_LEVELS, "precision": PRECISIONS}
# Settings only `nsfwoid serve` reads; `nsfwoid score` has no flags for them.
SERVE_ONLY = {"serve_only": True}
# `nsfwoid score`'s own defaults, under NSFWOID_* and its flags. It is for throughput, not latency: one
# single-threaded model run per core, at once, as the process-per-core ceiling runs, rather than one run spread
# over every core, whose threads wait on each other while the decode workers take cores from them
# (docs/performance.md, "`nsfwoid score`").
SCORE_DEFAULTS = {"inference_runs": 0, "batch_wait_ms": 25.0}


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup v2 quota (a Kubernetes CPU limit)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        limit = math.ceil(int(quota) / int(period))
    except (OSError, ValueError, ZeroDivisionError):  # no cgroup v2 file, or "max": no quota
        return cores
    return max(1, min(cores, limit))


@dataclass(frozen=True)
class Settings:
    host: str = field(default="0.0.0.0", metadata={**SERVE_ONLY, "help": "address to listen on"})
    port: int = field(default=8080, metadata={**SERVE_ONLY, "help": "port to listen on"})
    model_path: str = field(default="", metadata={"help": "ONNX weights; empty: the packaged file"})
    providers: tuple[str, ...] = field(
        default=(), metadata={"help": "onnxruntime providers; empty: CUDA if present, else CPU"}
    )
    tf32: bool = field(default=False, metadata={
        "help": "on CUDA, let cuDNN use TF32 convolutions: faster, scores move (docs/performance.md, GPU)"})
    precision: str = field(default="fp32", metadata={
        "help": "fp32 (onnxruntime), or bf16 (OpenVINO, nsfwoid[openvino]; needs AVX-512 BF16 or AMX): a model of "
                "its own"})
    exact: bool = field(default=False, metadata={"help": "always use the exact reference decode"})
    inference_threads: int = field(
        default=0, metadata={"help": "onnxruntime intra-op threads of one model run; 0: the cores over the runs"}
    )
    inference_runs: int = field(
        default=1, metadata={"help": "model runs at once, each on a thread of its own; 0: one per core"}
    )
    decode_workers: int = field(default=0, metadata={"help": "decode worker processes; 0: one per core"})
    max_batch: int = field(default=16, metadata={"help": "largest inference batch; on CUDA, every run's size"})
    batch_wait_ms: float = field(default=2.0, metadata={"help": "longest wait to fill a batch"})
    max_inflight: int = field(default=32, metadata={**SERVE_ONLY, "help": "scoring requests in progress at once"})
    max_receiving: int = field(
        default=64, metadata={**SERVE_ONLY, "help": "request bodies being received at once, apart from scoring"}
    )
    read_timeout: float = field(
        default=10.0, metadata={**SERVE_ONLY, "help": "longest time for a request body to arrive, s (408 past it)"}
    )
    header_timeout: float = field(default=10.0, metadata={
        **SERVE_ONLY, "help": "longest time for a request's line and headers to arrive, from a new connection or "
                              "the request's first byte, s; the connection is closed past it (408 if it sent any)"})
    keepalive_timeout: float = field(
        default=15.0, metadata={**SERVE_ONLY, "help": "how long an idle kept-alive connection stays open, s"}
    )
    max_connections: int = field(default=512, metadata={
        **SERVE_ONLY, "help": "client connections open at once; one more gets 503 overloaded and is closed"})
    max_instances: int = field(
        default=50, metadata={**SERVE_ONLY, "help": "instances in one KServe :predict call (Lift Wing's limit)"}
    )
    request_timeout: float = field(default=30.0, metadata={**SERVE_ONLY, "help": "deadline of one scoring request, s"})
    fetch_timeout: float = field(default=10.0, metadata={"help": "total time for one download, s"})
    max_image_bytes: int = field(default=25 * MiB, metadata={"help": "cap on a body or download"})
    image_memory: int = field(
        default=512 * MiB,
        metadata={**SERVE_ONLY, "help": "bytes of request bodies and downloads held at once; 3 x a KServe body, "
                                        "a download at its declared length"},
    )
    max_pixels: int = field(default=50_000_000, metadata={"help": "cap on width x height"})
    max_frames: int = field(
        default=8, metadata={"help": "frames of an animation or pages of a TIFF to score; 1: the first only"}
    )
    decode_timeout: float = field(
        default=10.0, metadata={"help": "longest decode of one image, s; the worker is killed past it"}
    )
    decode_memory: int = field(
        default=768 * MiB, metadata={"help": "address space of one decode worker process, bytes"}
    )
    allowed_hosts: tuple[str, ...] = field(
        default=("upload.wikimedia.org",), metadata={"help": "hosts or *.suffix; * for any public host"}
    )
    allow_private_addresses: bool = field(
        default=False, metadata={"help": "lift the address guard (development and tests only)"}
    )
    http_proxy: str = field(
        default="", metadata={"help": "forward proxy for downloads, http://host:port, which then vets the addresses "
                                      "it connects to (the allowlist still applies); empty: connect directly"}
    )
    drain_timeout: float = field(
        default=25.0, metadata={**SERVE_ONLY, "help": "how long SIGTERM waits for requests, s"}
    )
    log_format: str = field(default="auto", metadata={
        **SERVE_ONLY, "help": "json (ECS), console, or auto: console on a terminal, json otherwise"})
    log_level: str = field(default="info", metadata={**SERVE_ONLY, "help": "debug, info, warning or error"})

    def __post_init__(self) -> None:
        positive = ("port", "max_batch", "max_inflight", "max_image_bytes", "max_pixels", "max_frames",
                    "max_instances", "decode_timeout", "decode_memory", "max_receiving", "read_timeout",
                    "header_timeout", "keepalive_timeout", "max_connections")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be positive")
        for name in ("request_timeout", "fetch_timeout", "drain_timeout", "batch_wait_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must not be negative")
        if self.http_proxy:
            proxy = urllib.parse.urlsplit(self.http_proxy)
            if proxy.scheme != "http" or not proxy.hostname:
                raise ConfigError(f"{ENV_PREFIX}HTTP_PROXY={self.http_proxy!r} is not an http://host:port URL")
        for name in CHOICES:
            if why := choice_error(name, getattr(self, name)):
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={why}")

    def check_serving(self) -> None:
        """For serving: a slow upstream must meet its own deadline (504) before the request's (503), and an image
        of the largest size must fit in the memory for images."""
        if self.request_timeout and self.request_timeout <= self.fetch_timeout:
            raise ConfigError(f"{ENV_PREFIX}REQUEST_TIMEOUT ({self.request_timeout:g} s) must be longer than "
                              f"{ENV_PREFIX}FETCH_TIMEOUT ({self.fetch_timeout:g} s)")
        if self.image_memory < self.max_image_bytes:
            raise ConfigError(f"{ENV_PREFIX}IMAGE_MEMORY ({self.image_memory} bytes) must hold an image of "
                              f"{ENV_PREFIX}MAX_IMAGE_BYTES ({self.max_image_bytes} bytes)")

    @property
    def inference_run_count(self) -> int:
        return self.inference_runs or available_cores()

    @property
    def inference_thread_count(self) -> int:
        return self.inference_threads or max(1, available_cores() // self.inference_run_count)

    @property
    def decode_worker_count(self) -> int:
        return self.decode_workers or available_cores()

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, defaults: Mapping[str, Any] | None = None,
             **overrides: Any) -> Settings:
        """The fields' defaults, overridden by `defaults` (a command's own), by NSFWOID_* variables, then by
        non-None keyword arguments (flags)."""
        env = _renamed(os.environ if env is None else env)
        values: dict[str, Any] = dict(defaults or {})
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# Variables that were renamed: old name → new name. The old name still works, with a deprecation warning.
RENAMED = {"NSFWOID_DECODE_THREADS": "NSFWOID_DECODE_WORKERS"}  # they are processes, not threads


def _renamed(env: Mapping[str, str]) -> Mapping[str, str]:
    """The environment with each renamed variable under its new name, unless the new name is set too."""
    old_names = [old for old in RENAMED if old in env]
    if not old_names:
        return env
    env = dict(env)
    for old in old_names:
        new = RENAMED[old]
        warnings.warn(f"{old} is deprecated: set {new}", FutureWarning, stacklevel=3)  # shown by default
        env.setdefault(new, env[old])
    return env


TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off", "")
# What a value of each kind must be, in words, as a refusal says it.
KIND_WORDS = {int: "a whole number, such as 8080", float: "a number, such as 2.5",
              bool: "one of " + ", ".join(TRUE_WORDS + FALSE_WORDS[:-1])}


def _parse(f: dataclasses.Field, raw: str) -> Any:
    name = ENV_PREFIX + f.name.upper()
    kind = type(f.default)
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in TRUE_WORDS:
                return True
            if lowered in FALSE_WORDS:
                return False
            raise ValueError(raw)
        if kind is tuple:
            return split_list(raw)
        return kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {KIND_WORDS.get(kind, 'a ' + kind.__name__)}") from None


def choice_error(name: str, value: str) -> str | None:
    """Why `value` cannot be the setting `name`, one of CHOICES; None when it can."""
    if value in CHOICES[name]:
        return None
    return f"{value!r} is not one of {', '.join(CHOICES[name])}"


def split_list(raw: str) -> tuple[str, ...]:
    """A comma-separated setting, from the environment or a flag."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())
