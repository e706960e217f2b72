"""`nsfwoid serve` and `nsfwoid score PATH_OR_URL…`. Every setting is a flag, over NSFWOID_* variables."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from . import package_version
from .app import create_app
from .config import LOG_FORMATS, LOG_LEVELS, ConfigError, Settings, split_list
from .errors import Problem
from .fetch import create_session, fetch
from .logging import AccessLogger, configure_logging, get_logger
from .model import ModelError, load_model
from .scoring import format_score, running_scorer
from .state import RUNTIME, Status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nsfwoid", description="NSFW image scoring with open_nsfw.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    score = commands.add_parser("score", help="print the NSFW score of files or URLs")
    score.add_argument("targets", nargs="+", metavar="PATH_OR_URL")
    for sub in (serve, score):
        for f in dataclasses.fields(Settings):
            if sub is score and f.metadata.get("serve_only"):
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(f.default, bool):
                sub.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f.metadata["help"])
            else:
                kind = split_list if isinstance(f.default, tuple) else type(f.default)
                choices = {"log_level": LOG_LEVELS, "log_format": LOG_FORMATS}.get(f.name)
                sub.add_argument(flag, type=kind, choices=choices, default=None, help=f.metadata["help"])
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings.load(**{f.name: getattr(args, f.name, None) for f in dataclasses.fields(Settings)})


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        if args.command == "serve":
            settings.check_deadlines()
    except ConfigError as exc:
        sys.exit(f"nsfwoid: {exc}")
    if args.command == "serve":
        configure_logging(settings.log_format, settings.log_level)
        try:
            asyncio.run(serve(settings))
        except CannotListen as exc:
            sys.exit(f"nsfwoid: {exc}")
    else:
        configure_logging("console", "warning", stream=sys.stderr)
        sys.exit(asyncio.run(score_targets(settings, args.targets)))


class CannotListen(Exception):
    """The address is in use, or not ours to bind."""


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then drain: /healthz 503, stop listening, finish in-flight requests."""
    log = get_logger()
    app = create_app(settings)
    runner = web.AppRunner(
        app, handle_signals=False, access_log_class=AccessLogger, shutdown_timeout=settings.drain_timeout
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CannotListen(f"cannot listen on {settings.host}:{settings.port}: {reason}") from None
    log.info("listening", **{"server.address": settings.host, "server.port": settings.port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    if app[RUNTIME].status is Status.OK:
        app[RUNTIME].status = Status.DRAINING
    log.info("draining", inflight=app[RUNTIME].inflight, drain_timeout=settings.drain_timeout)
    await runner.cleanup()
    log.info("stopped")


async def score_targets(settings: Settings, targets: list[str]) -> int:
    """One `SCORE<TAB>TARGET` line per good target on stdout, one error line per bad one on stderr."""
    try:
        model = await asyncio.to_thread(load_model, settings)
    except ModelError as exc:
        print(f"nsfwoid: {exc}", file=sys.stderr)
        return 2
    failures = 0
    async with create_session(settings) as session, running_scorer(settings, model.run) as scorer:
        for target in targets:
            try:
                data = await _read_target(session, target, settings)
                scored = await scorer.score(data)
            except Problem as problem:
                failures += 1
                print(f"nsfwoid: {target}: {problem.name}: {problem.detail}", file=sys.stderr)
                continue
            except OSError as exc:
                failures += 1
                print(f"nsfwoid: {target}: cannot read: {exc.strerror or exc}", file=sys.stderr)
                continue
            print(f"{format_score(scored.score)}\t{target}", flush=True)
    return 1 if failures else 0


async def _read_target(session, target: str, settings: Settings) -> bytes:
    if target.startswith(("http://", "https://")):
        return await fetch(session, target, settings)
    return await asyncio.to_thread(Path(target).read_bytes)
