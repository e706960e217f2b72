"""`nsfwoid serve` and `nsfwoid score PATH_OR_URL…`. Every setting is a flag, over NSFWOID_* variables."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from . import package_version
from .batch.output import OutputFailed
from .batch.run import score_batch
from .batch.targets import BatchOptions, parse_shard, unusable_paths
from .config import CHOICES, SCORE_DEFAULTS, ConfigError, Settings, choice_error, split_list
from .errors import ServiceFailed
from .http.server import STOP_SIGNALS, CannotListen, serve
from .logging import configure_logging
from .scoring.bf16 import bf16_refusal
from .scoring.model import ModelError, load_model

# `nsfwoid score`'s exit status when no retry would do better: argparse's for a usage error, also a model that
# fails and decode workers that cannot start. The backfill Job fails at once on it.
CANNOT_RUN = 2
# An output that cannot be written (ENOSPC, EIO, EDQUOT): the run stops at its first failed line, and the same
# command with --resume goes on once there is space.
OUTPUT_FAILED = 3


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="nsfwoid", description="NSFW image scoring with open_nsfw.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    score = commands.add_parser(
        "score", help="score files, directories or URLs",
        description="Score image files, directories of them, or URLs: one line per target.",
    )
    add_batch_arguments(score)
    for sub in (serve, score):
        for f in dataclasses.fields(Settings):
            if sub is score and f.metadata.get("serve_only"):
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(f.default, bool):
                sub.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["help"])
            elif f.name in CHOICES:
                sub.add_argument(flag, type=functools.partial(choice, f.name), default=None, help=f.metadata["help"])
            else:
                kind = split_list if isinstance(f.default, tuple) else type(f.default)
                sub.add_argument(flag, type=kind, default=None, help=f.metadata["help"])
    return parser


def add_batch_arguments(score: argparse.ArgumentParser) -> None:
    defaults = BatchOptions()
    score.add_argument("targets", nargs="*", metavar="PATH_OR_URL", help="files, directories (walked) or URLs")
    lists = score.add_mutually_exclusive_group()
    lists.add_argument("--from0", dest="from0", metavar="FILE",
                       help="read paths or URLs each ended by a NUL byte (find -print0) from FILE, taken as they are: "
                            "for names that begin with spaces or #; - for standard input")
    lists.add_argument("--from", dest="from_file", metavar="FILE",
                       help="read one path or URL per line from FILE; - for standard input")
    score.add_argument("--jsonl", action="store_true", help="one JSON object per target, errors included")
    score.add_argument("--output", type=Path, metavar="FILE", help="append lines to FILE, each flushed when done")
    score.add_argument("--resume", action="store_true",
                       help="skip the targets finished in an earlier run into --output; those that failed for a "
                            "passing reason (5xx: a host down, busy or slow) are tried again")
    score.add_argument("--retry-failed", action="store_true",
                       help="with --resume, try again the targets that failed for good too (4xx: an image that "
                            "cannot be read, a URL not allowed)")
    score.add_argument("--concurrency", type=positive_int, default=defaults.concurrency,
                       help="targets in progress at once (default %(default)s)")
    score.add_argument("--per-host", type=positive_int, default=defaults.per_host,
                       help="downloads at once from one host (default %(default)s)")
    score.add_argument("--retries", type=int, default=defaults.retries,
                       help="retries of a 429 or 503 answer, honouring Retry-After (default %(default)s)")
    score.add_argument("--min-score", type=unit_interval, metavar="X",
                       help="write only the targets scoring at least X, from 0 to 1")
    score.add_argument("--shard", type=shard_argument, metavar="I/N",
                       help="only the targets whose number modulo N is I (numbered from 0)")
    score.add_argument("--progress-every", type=float, default=defaults.progress_every, metavar="SECONDS",
                       help="when stderr is no terminal, a progress line this often (default %(default)s)")


def choice(name: str, text: str) -> str:
    """A flag whose value is one of config.CHOICES, refused by argparse in config's words."""
    if why := choice_error(name, text):
        raise argparse.ArgumentTypeError(why)
    return text


def shard_argument(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def unit_interval(text: str) -> float:
    """A score: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0  # refused below, with the same words
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a score, a number from 0 to 1")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0  # refused below, with the same words
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line, naming the flag and what it accepts, and exit status 2 (CANNOT_RUN); the
    usage itself is in --help."""

    def error(self, message: str):
        self.exit(CANNOT_RUN, f"{self.prog}: error: {message}\n")


def batch_options(args: argparse.Namespace) -> BatchOptions:
    return BatchOptions(
        targets=tuple(args.targets), from_file=args.from_file or args.from0, nul_separated=args.from0 is not None,
        jsonl=args.jsonl, output=args.output,
        resume=args.resume, retry_failed=args.retry_failed, concurrency=args.concurrency, per_host=args.per_host,
        retries=args.retries,
        min_score=args.min_score, shard=args.shard, progress_every=args.progress_every,
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The command's defaults, then NSFWOID_* variables, then its flags."""
    defaults = SCORE_DEFAULTS if args.command == "score" else {}
    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Settings)}
    return Settings.load(defaults=defaults, **flags)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "score":
        if not args.targets and args.from_file is None and args.from0 is None:
            parser.error("score: give targets, or --from FILE, or --from0 FILE")
        if args.resume and args.output is None:
            parser.error("score: --resume needs --output")
        if why := unusable_paths(args.from_file or args.from0, args.output):
            parser.error(f"score: {why}")
    try:
        settings = settings_from_args(args)
        if args.command == "serve":
            settings.check_serving()
    except ConfigError as exc:
        print(f"nsfwoid: {exc}", file=sys.stderr)
        sys.exit(CANNOT_RUN)
    # Before anything starts: the service would otherwise listen, and only /healthz would say it cannot score.
    if settings.precision == "bf16" and (why := bf16_refusal()):
        print(f"nsfwoid: {why}", file=sys.stderr)
        sys.exit(CANNOT_RUN)
    if args.command == "serve":
        configure_logging(settings.log_format, settings.log_level)
        try:
            asyncio.run(serve(settings))
        except CannotListen as exc:
            sys.exit(f"nsfwoid: {exc}")
    else:
        configure_logging("console", "warning", stream=sys.stderr)
        try:
            sys.exit(asyncio.run(score_targets(settings, batch_options(args))))
        except BrokenPipeError:  # `nsfwoid score … | head`: the reader has what it wanted
            _discard_stdout()
            sys.exit(1)
        except OutputFailed as exc:
            _discard_stdout()
            print(f"nsfwoid: {exc}", file=sys.stderr)
            sys.exit(OUTPUT_FAILED)


def _discard_stdout() -> None:
    """Python's flush of stdout at exit would fail again, and print a traceback."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


async def score_targets(settings: Settings, options: BatchOptions) -> int:
    """Exit status: 0 when every target was scored, 1 when some failed, 2 when the model cannot load or fails
    its self-test or decode workers cannot start, 128 + the signal's number when SIGINT or SIGTERM stopped the
    run. An output that cannot be written raises OutputFailed."""
    with cancelled_by_signals(asyncio.current_task()) as received:
        try:
            model = await asyncio.to_thread(load_model, settings)
            return await score_batch(settings, options, model)
        except (ModelError, ServiceFailed) as exc:
            print(f"nsfwoid: {exc}", file=sys.stderr)
            return CANNOT_RUN
        except asyncio.CancelledError:
            if not received:
                raise
    resume = "; the same command with --resume goes on from here" if options.output else ""
    print(f"nsfwoid: stopped by {received[0].name}{resume}", file=sys.stderr, flush=True)
    return 128 + received[0]


@contextlib.contextmanager
def cancelled_by_signals(task: asyncio.Task) -> Iterator[list[signal.Signals]]:
    """The first SIGINT or SIGTERM cancels the task, which stops as a run does (its workers killed, its summary
    written), and is then in the list; a second has its usual effect."""
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def cancel(signum: signal.Signals) -> None:
        received.append(signum)
        for other in STOP_SIGNALS:
            loop.remove_signal_handler(other)
        task.cancel()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, cancel, signum)
    try:
        yield received
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
