"""`nsfwoid score`'s targets: what to score (arguments, lists, walked directories, a shard of them), streamed,
never held all at once; and what an earlier run into the same output finished (--resume)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import IO

from ..scoring.imaging import SUFFIXES

# Targets are file names, which are bytes: one that is not UTF-8 is read, kept and written back as those bytes
# (errors="surrogateescape" wherever targets are read or written).
# Beside --output: the finished targets that the output does not hold (under --min-score; failed, in text output),
# so that --resume never does them again. One `STATUS<TAB>NAME<TAB>TARGET` line each.
UNWRITTEN_SUFFIX = ".resume"


@dataclass(frozen=True)
class BatchOptions:
    targets: tuple[str, ...] = ()
    from_file: str | None = None  # one path or URL per line; "-": standard input
    nul_separated: bool = False  # --from0: the list's entries end with NUL bytes, and are taken as they are
    jsonl: bool = False
    output: Path | None = None
    resume: bool = False
    concurrency: int = 16
    per_host: int = 2
    retries: int = 3
    min_score: float | None = None
    retry_failed: bool = False  # --resume tries again the targets that failed for good (4xx) too
    shard: tuple[int, int] | None = None  # (I, N): only targets whose number modulo N is I
    progress_every: float = 5.0  # seconds between progress lines when stderr is no terminal


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` with 0 ≤ I < N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r} is not I/N") from None
    if count < 1:
        raise ValueError(f"--shard {text!r}: N, the number of shards, must be at least 1")
    if not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: I must be at least 0 and less than N")
    return index, count


def expand(entries: Iterable[str]) -> Iterator[str]:
    """Paths and URLs as given, with each directory replaced by the image files under it, in sorted order."""
    for entry in entries:
        if "://" not in entry and os.path.isdir(entry):
            yield from walk(entry)
        else:
            yield entry


def walk(directory: str) -> Iterator[str]:
    """The image files under a directory, in sorted order, following symbolic links to directories once each (a
    link back up the tree is not followed round). A directory that cannot be listed is a target of its own, so
    that reading it fails and the run reports it rather than leaving a silent gap."""
    unlisted: list[str] = []
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(directory, onerror=lambda exc: unlisted.append(exc.filename), followlinks=True):
        yield from unlisted
        unlisted.clear()
        try:
            status = os.stat(root)
        except OSError:
            continue
        if (status.st_dev, status.st_ino) in seen:
            dirs.clear()
            continue
        seen.add((status.st_dev, status.st_ino))
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in SUFFIXES:
                yield os.path.join(root, name)
    yield from unlisted


def listed(options: BatchOptions) -> Iterator[str]:
    """Every target: the arguments, then the lines of --from, blank lines and # comments skipped, their spaces
    stripped; or the NUL-separated entries of --from0, as they are."""
    yield from options.targets
    if options.from_file is None:
        return
    if options.nul_separated:
        yield from _nul_separated(options.from_file)
        return
    if options.from_file == "-":
        sys.stdin.reconfigure(errors="surrogateescape")
        stream = sys.stdin
    else:
        stream = open(options.from_file, encoding="utf-8", errors="surrogateescape")
    with stream:
        for line in stream:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


def _nul_separated(from_file: str, block: int = 1 << 16) -> Iterator[str]:
    """The entries of a NUL-separated list (find -print0), read a block at a time; empty ones skipped."""
    with (open(sys.stdin.fileno(), "rb", closefd=False) if from_file == "-" else open(from_file, "rb")) as stream:
        rest = b""
        while data := stream.read(block):
            *entries, rest = (rest + data).split(b"\0")
            yield from (entry.decode("utf-8", "surrogateescape") for entry in entries if entry)
        if rest:
            yield rest.decode("utf-8", "surrogateescape")


def unusable_paths(from_file: str | None, output: Path | None) -> str | None:
    """Why --from cannot be read or --output cannot be appended to, found before any work: said as a usage error,
    not as a traceback mid-run. A FIFO given to --from is left to be opened once, when it is read."""
    try:
        if from_file not in (None, "-") and not stat.S_ISFIFO(os.stat(from_file).st_mode):
            open(from_file, "rb").close()
    except OSError as exc:
        return f"--from {from_file}: {exc.strerror}"
    try:
        if output is not None:
            open(output, "ab").close()
    except OSError as exc:
        return f"--output {output}: {exc.strerror}"
    return None


def in_shard(targets: Iterable[str], shard: tuple[int, int] | None) -> Iterator[str]:
    if shard is None:
        yield from targets
        return
    index, count = shard
    for number, target in enumerate(targets):
        if number % count == index:
            yield target


def selected(options: BatchOptions) -> Iterator[str]:
    return in_shard(expand(listed(options)), options.shard)


def count_targets(options: BatchOptions, stop: threading.Event) -> int | None:
    """How many targets there are, walking every directory and reading every list once more: run in a thread
    beside the scoring, so that progress has a total and an ETA once it is done. None for standard input, which
    can be read only once, or when `stop` is set first."""
    if options.from_file == "-":
        return None
    if options.from_file is not None and not os.path.isfile(options.from_file):
        return None  # a FIFO: it too can be read only once
    count = 0
    try:
        for _ in selected(options):
            if stop.is_set():
                return None
            count += 1
    except (OSError, UnicodeError):  # the run itself reports what it cannot read
        return None
    return count


def text_name(target: str) -> str:
    """A target as a text line holds it: as it is, unless it would break the line (a line feed or carriage return
    in a file name) or be taken for a quoted one (a leading "), which are written as JSON strings."""
    if "\n" in target or "\r" in target or target.startswith('"'):
        return json.dumps(target, ensure_ascii=False)
    return target


def from_text_name(field: str) -> str:
    """The target a text line names (text_name, undone)."""
    if field.startswith('"'):
        with contextlib.suppress(ValueError):
            target = json.loads(field)
            if isinstance(target, str):
                return target
    return field


def unwritten_path(output: Path) -> Path:
    return output.with_name(output.name + UNWRITTEN_SUFFIX)


def resume_point(output: Path, jsonl: bool) -> dict[str, int]:
    """The targets finished earlier, each with the status it finished with (200, or its problem's): from the
    output's lines, and from the unwritten file beside it. A line cut short by a kill is dropped first. Where a
    target has several lines (it failed, and was tried again), the lowest status counts: a success anywhere."""
    finished: dict[str, int] = {}

    def note(target: str, status: int) -> None:
        finished[target] = min(status, finished.get(target, status))

    for path in (output, unwritten_path(output)):
        for line in _complete_lines(path):
            if path != output:
                status, _, target = line.split("\t", 2)
                note(from_text_name(target), int(status))
            elif jsonl:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    record = json.loads(line)
                    note(record["target"], int(record["error"]["status"]) if "error" in record else HTTPStatus.OK)
            elif "\t" in line:
                note(from_text_name(line.split("\t", 1)[1]), HTTPStatus.OK)
    return finished


def _complete_lines(path: Path) -> Iterator[str]:
    """The file's lines, without their newlines, once a last line cut short by a kill is dropped."""
    if not path.exists():
        return
    with path.open("r+b") as stream:
        complete = _end_of_last_line(stream)
        if complete < stream.seek(0, os.SEEK_END):
            stream.truncate(complete)
    with path.open(encoding="utf-8", errors="surrogateescape") as lines:
        for line in lines:
            yield line.rstrip("\n")


def to_do_again(status: int, retry_failed: bool) -> bool:
    """Whether --resume does a finished target again: a transient failure (5xx: the host or the service was
    down, busy or slow) always; a failure for good (4xx: the image or the file cannot be scored) with
    --retry-failed only; a scored target never."""
    return status >= 500 or (status >= 400 and retry_failed)


def _end_of_last_line(stream: IO[bytes], block: int = 1 << 16) -> int:
    """The offset just after the file's last newline (0 if it has none), reading backwards from the end."""
    end = stream.seek(0, os.SEEK_END)
    while end > 0:
        start = max(0, end - block)
        stream.seek(start)
        newline = stream.read(end - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
