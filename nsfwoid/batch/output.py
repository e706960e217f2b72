"""`nsfwoid score`'s output: one line per target, written and flushed as soon as it is done, and the file
beside --output that records the finished targets the output does not hold."""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from http import HTTPStatus
from typing import IO

from ..errors import Problem
from ..scoring.scored import Scored
from .progress import Progress, Tally
from .targets import BatchOptions, text_name, unwritten_path


class OutputFailed(Exception):
    """The output cannot be written (a full disk): the run stops, as nothing more it did would be kept."""


def redacted(target: str) -> str:
    """A URL without its query string, which may hold a token, as the logs leave it out; other targets as they are.
    For what people read on stderr: the output itself keeps each target whole, as --resume needs."""
    if "://" not in target:
        return target
    parts = urllib.parse.urlsplit(target)
    return urllib.parse.urlunsplit(parts._replace(query="…" if parts.query else "", fragment=""))


def result_record(target: str, scored: Scored) -> dict:
    return {"target": target, **scored.json}


def error_record(target: str, problem: Problem) -> dict:
    """The problem as problem+json and KServe give it: `type` is its URN."""
    return {"target": target, "error": problem.to_dict()}


class Output:
    """Where a run's lines go: the output (a file, or standard output), and the unwritten file beside it."""

    def __init__(self, options: BatchOptions, out: IO[str], tally: Tally, progress: Progress) -> None:
        self.options, self.out, self.tally, self.progress = options, out, tally, progress
        self.unwritten: IO[str] | None = None  # opened on its first line

    def result(self, target: str, scored: Scored) -> None:
        if self.options.min_score is not None and scored.score < self.options.min_score:
            self.tally.below += 1
            self._write_unwritten(HTTPStatus.OK, "below-min-score", target)
            return
        if self.options.jsonl:
            self._write(json.dumps(result_record(target, scored)))
        else:
            self._write(f"{scored.text}\t{text_name(target)}")

    def error(self, target: str, problem: Problem) -> None:
        if self.options.jsonl:
            self._write(json.dumps(error_record(target, problem)))
        else:
            self.progress.message(f"nsfwoid: {text_name(redacted(target))}: {problem.name}: {problem.detail}")
            self._write_unwritten(problem.status, problem.name, target)

    def _write_unwritten(self, status: int, name: str, target: str) -> None:
        """A finished target that the output does not hold, beside the output, for --resume."""
        if self.options.output is None:
            return
        path = unwritten_path(self.options.output)
        if self.unwritten is None:
            try:
                self.unwritten = path.open("a", encoding="utf-8", errors="surrogateescape")
            except OSError as exc:
                raise OutputFailed(f"cannot write to {path}: {exc.strerror or exc}") from None
        self._write_to(self.unwritten, f"{status}\t{name}\t{text_name(target)}", path)

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
