"""`nsfwoid score` at scale: streamed targets, concurrent downloads, the service's decode pool and
micro-batcher, resumable output, politeness toward image hosts, progress and a summary.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
from tqdm import tqdm

from .config import Settings
from .errors import FileNotFound, FileUnreadable, Problem, UnsupportedMediaType, UpstreamBusy, check_size
from .fetch import create_session, fetch
from .model import Model
from .sandbox import sha1_hex
from .scoring import Scored, Scorer, format_score, running_scorer, self_test

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".apng", ".gif", ".webp", ".tif", ".tiff", ".bmp"})
RETRY_BASE_SECONDS = 1.0
RETRY_AFTER_CAP_SECONDS = 300.0
READ_AHEAD_LINES = 256
# Targets are file names, which are bytes: one that is not UTF-8 is read, kept and written back as those bytes.
NAME_ERRORS = "surrogateescape"
# Beside --output: the finished targets that the output does not hold (under --min-score; failed, in text output),
# so that --resume never does them again. One `STATUS<TAB>NAME<TAB>TARGET` line each.
UNWRITTEN_SUFFIX = ".resume"
SCORED = 200  # the status a scored target is recorded with


@dataclass(frozen=True)
class BatchOptions:
    targets: tuple[str, ...] = ()
    from_file: str | None = None  # one path or URL per line; "-": standard input
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
    if not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: I must be at least 0 and less than N")
    return index, count


# Targets: streamed, never held all at once.

def expand(entries: Iterable[str]) -> Iterator[str]:
    """Paths and URLs as given, with each directory replaced by the image files under it, in sorted order."""
    for entry in entries:
        if "://" not in entry and os.path.isdir(entry):
            for root, dirs, files in os.walk(entry):
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        yield os.path.join(root, name)
        else:
            yield entry


def listed(options: BatchOptions) -> Iterator[str]:
    """Every target: the arguments, then the lines of --from; blank lines and # comments skipped."""
    yield from options.targets
    if options.from_file is None:
        return
    if options.from_file == "-":
        sys.stdin.reconfigure(errors=NAME_ERRORS)
        stream = sys.stdin
    else:
        stream = open(options.from_file, encoding="utf-8", errors=NAME_ERRORS)
    with stream:
        for line in stream:
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


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


# Output: one line per target, written and flushed as soon as it is done.

def unwritten_path(output: Path) -> Path:
    return output.with_name(output.name + UNWRITTEN_SUFFIX)


def resume_point(output: Path, jsonl: bool) -> dict[str, int]:
    """The targets finished earlier, each with the status it finished with (SCORED, or its problem's): from the
    output's lines, and from the unwritten file beside it. A line cut short by a kill is dropped first. Where a
    target has several lines (it failed, and was tried again), the lowest status counts: a success anywhere."""
    finished: dict[str, int] = {}

    def note(target: str, status: int) -> None:
        finished[target] = min(status, finished.get(target, status))

    for path in (output, unwritten_path(output)):
        for line in _complete_lines(path):
            if path != output:
                status, _, target = line.split("\t", 2)
                note(target, int(status))
            elif jsonl:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    record = json.loads(line)
                    note(record["target"], int(record["error"]["status"]) if "error" in record else SCORED)
            elif "\t" in line:
                note(line.split("\t", 1)[1], SCORED)
    return finished


def _complete_lines(path: Path) -> Iterator[str]:
    """The file's lines, without their newlines, once a last line cut short by a kill is dropped."""
    if not path.exists():
        return
    with path.open("r+b") as stream:
        complete = _end_of_last_line(stream)
        if complete < stream.seek(0, os.SEEK_END):
            stream.truncate(complete)
    with path.open(encoding="utf-8", errors=NAME_ERRORS) as lines:
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


def read_file(path: str, cap: int) -> tuple[bytes, str]:
    """A local target: the file's bytes and their hex SHA-1, refused before reading when it is over the cap, or
    when it is no regular file (a FIFO with no writer would hold its open, and the run, forever)."""
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as stream:
        status = os.fstat(stream.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise UnsupportedMediaType("not a regular file")
        size = status.st_size
        check_size(size, cap, "the file")
        data = stream.read(cap + 1)
    return data, sha1_hex(data)


def result_record(target: str, scored: Scored) -> dict:
    return {"target": target, "score": scored.score, "sha1": scored.sha1, "sha1_base36": scored.sha1_base36,
            "bytes": scored.size, "frames": scored.frames_json()}


def detached(problem: Problem) -> Problem:
    """The problem without the tracebacks of it and of the exceptions it was raised from. A run keeps one
    problem per SHA-1 until it ends, and those tracebacks' frames hold the image's bytes."""
    problem.__cause__ = problem.__context__ = None
    return problem.with_traceback(None)


def error_record(target: str, problem: Problem) -> dict:
    """The problem as problem+json and KServe give it: `type` is its URN."""
    return {"target": target, "error": problem.to_dict()}


def counted(count: int, noun: str) -> str:
    """"1 error", "2 errors"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass
class Tally:
    started: float = field(default_factory=time.monotonic)
    total: int | None = None  # the targets selected, once counted
    scored: int = 0
    duplicates: int = 0  # scored as identical bytes seen earlier in the run
    skipped: int = 0  # finished in an earlier run (--resume)
    retried: int = 0  # failed in an earlier run, and tried again (--resume)
    below: int = 0  # scored under --min-score, so not written
    errors: collections.Counter = field(default_factory=collections.Counter)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def done(self) -> int:
        return self.scored + self.failed + self.skipped

    def rate(self) -> float:
        return (self.scored + self.failed) / max(time.monotonic() - self.started, 1e-9)

    def eta(self) -> str | None:
        """The time left, as H:MM:SS, once the total is known and something was done."""
        rate = self.rate()
        if self.total is None or rate <= 0:
            return None
        seconds = int(max(self.total - self.done, 0) / rate)
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

    def summary(self) -> str:
        # "58 of 203 targets" for a run that stopped before the end.
        of = f" of {self.total}" if self.total is not None and self.done < self.total else ""
        line = (f"nsfwoid: {self.done}{of} target{'' if self.done == 1 and not of else 's'}: {self.scored} scored "
                f"({self.duplicates} identical to an earlier one), {self.failed} failed, {self.skipped} skipped as "
                f"already done")
        if self.retried:
            line += f", {self.retried} tried again after failing before"
        line += f"; {self.rate():.1f}/s"
        if self.below:
            line += f"; {self.below} under --min-score not written"
        if self.errors:
            line += "; errors: " + ", ".join(f"{name} {count}" for name, count in self.errors.most_common())
        return line


class Progress:
    """A progress bar on a terminal (tqdm); elsewhere a line every few seconds. Both show a total and an ETA once
    the targets are counted."""

    def __init__(self, tally: Tally, stream: IO[str], every: float) -> None:
        self.tally, self.stream, self.every = tally, stream, every
        self.bar = tqdm(total=tally.total, unit="img", file=stream, dynamic_ncols=True) if stream.isatty() else None
        self.last_line = time.monotonic()

    def set_total(self, total: int | None) -> None:
        self.tally.total = total
        if self.bar is not None and total is not None:
            self.bar.total = total
            self.bar.refresh()

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(errors=self.tally.failed, refresh=False)
        elif time.monotonic() - self.last_line >= self.every:
            self.last_line = time.monotonic()
            tally = self.tally
            of = f"/{tally.total}" if tally.total is not None else ""
            eta = f", ETA {eta}" if (eta := tally.eta()) else ""
            print(f"nsfwoid: progress: {tally.done}{of} targets, {tally.rate():.1f}/s, "
                  f"{counted(tally.failed, 'error')}{eta}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A line on stderr that does not tear the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class OutputFailed(Exception):
    """The output cannot be written (a full disk): the run stops, as nothing more it did would be kept."""


class Batch:
    """One run: the shared session, scorer, per-run caches and the output."""

    def __init__(self, settings: Settings, options: BatchOptions, session: aiohttp.ClientSession, scorer: Scorer,
                 out: IO[str], tally: Tally, progress: Progress) -> None:
        self.settings, self.options, self.session, self.scorer = settings, options, session, scorer
        self.out, self.tally, self.progress = out, tally, progress
        # Identical bytes are scored once per run: SHA-1 → the task scoring them, then its result or problem.
        self.by_sha1: dict[str, asyncio.Future | Scored | Problem] = {}
        self.unwritten: IO[str] | None = None  # opened on its first line

    async def run(self, targets: Iterator[str], finished: dict[str, int]) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=2 * self.options.concurrency)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.options.concurrency)]
        try:
            while chunk := await asyncio.to_thread(lambda: list(itertools.islice(targets, READ_AHEAD_LINES))):
                for target in chunk:
                    status = finished.get(target)
                    if status is not None:
                        if not to_do_again(status, self.options.retry_failed):
                            self.tally.skipped += 1
                            self.progress.update()
                            continue
                        self.tally.retried += 1
                    await queue.put(target)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()

    async def _worker(self, queue: asyncio.Queue) -> None:
        while (target := await queue.get()) is not None:
            outcome = await self._outcome(target)
            if isinstance(outcome, Problem):
                self.tally.errors[outcome.name] += 1
                self._write_error(target, outcome)
            else:
                self.tally.scored += 1
                self._write_result(target, outcome)
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
        task = asyncio.ensure_future(self._score(data, sha1))
        self.by_sha1[sha1] = task
        self.by_sha1[sha1] = outcome = await asyncio.shield(task)
        return outcome

    async def _score(self, data: bytes, sha1: str) -> Scored | Problem:
        try:
            return await self.scorer.score(data, sha1=sha1)
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
            raise FileUnreadable(f"cannot read {target}: {exc.strerror or exc}") from None

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

    def _write_result(self, target: str, scored: Scored) -> None:
        if self.options.min_score is not None and scored.score < self.options.min_score:
            self.tally.below += 1
            self._write_unwritten(SCORED, "below-min-score", target)
            return
        if self.options.jsonl:
            self._write(json.dumps(result_record(target, scored)))
        else:
            self._write(f"{format_score(scored.score)}\t{target}")

    def _write_error(self, target: str, problem: Problem) -> None:
        if self.options.jsonl:
            self._write(json.dumps(error_record(target, problem)))
        else:
            self.progress.message(f"nsfwoid: {target}: {problem.name}: {problem.detail}")
            self._write_unwritten(problem.status, problem.name, target)

    def _write_unwritten(self, status: int, name: str, target: str) -> None:
        """A finished target that the output does not hold, beside the output, for --resume."""
        if self.options.output is None:
            return
        path = unwritten_path(self.options.output)
        try:
            if self.unwritten is None:
                self.unwritten = path.open("a", encoding="utf-8", errors=NAME_ERRORS)
            self._write_to(self.unwritten, f"{status}\t{name}\t{target}", path)
        except OSError as exc:
            raise OutputFailed(f"cannot write to {path}: {exc.strerror or exc}") from None

    def _write(self, line: str) -> None:
        self._write_to(self.out, line, self.options.output or "standard output")

    @staticmethod
    def _write_to(stream: IO[str], line: str, where: object) -> None:
        try:
            stream.write(line + "\n")
            stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputFailed(f"cannot write to {where}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self.unwritten is not None:
            with contextlib.suppress(OSError):  # only a failed write, reported already, leaves a line to flush
                self.unwritten.close()


async def score_batch(settings: Settings, options: BatchOptions, model: Model) -> int:
    """Score every selected target; 0 when all were scored, 1 when some failed.

    Raises ModelError, before any target is read, when the self-test fails.
    """
    finished = resume_point(options.output, options.jsonl) if options.resume and options.output else {}
    if options.output:
        out = options.output.open("a", encoding="utf-8", errors=NAME_ERRORS)
    else:
        sys.stdout.reconfigure(errors=NAME_ERRORS)
        out = sys.stdout
    tally = None
    stop_counting = threading.Event()
    try:
        async with (
            create_session(settings, connections=options.concurrency, per_host=options.per_host) as session,
            running_scorer(settings, model.run) as scorer,
        ):
            await self_test(scorer)
            # Counted from here, as the service is ready from here: the model and the decode workers are up.
            tally = Tally()
            progress = Progress(tally, sys.stderr, options.progress_every)
            counting = asyncio.ensure_future(asyncio.to_thread(count_targets, options, stop_counting))
            counting.add_done_callback(lambda task: task.cancelled() or progress.set_total(task.result()))
            batch = Batch(settings, options, session, scorer, out, tally, progress)
            try:
                await batch.run(selected(options), finished)
                await counting  # the total, for the summary
            finally:
                stop_counting.set()
                batch.close()
                progress.close()
    finally:
        stop_counting.set()
        if out is not sys.stdout:
            with contextlib.suppress(OSError):  # only a failed write, reported already, leaves a line to flush
                out.close()
        if tally is not None:  # also when the run was stopped
            print(tally.summary(), file=sys.stderr, flush=True)
    return 1 if tally.failed else 0
