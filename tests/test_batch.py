"""`nsfwoid score` at scale: every option, against real files and loopback image hosts."""

import asyncio
import fcntl
import json
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest
from aiohttp import web

from nsfwoid.batch.run import detached
from nsfwoid.batch.targets import in_shard
from nsfwoid.errors import ImageTooLarge, problem_type

from . import helpers, images, processes, reference

# Real `nsfwoid` processes, each with its decode workers.
pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = reference.expected_scores()
LOOPBACK = {"NSFWOID_ALLOWED_HOSTS": "127.0.0.1", "NSFWOID_ALLOW_PRIVATE_ADDRESSES": "true"}


async def run_score(*args: str, stdin: bytes | None = None, env: dict | None = None, timeout: float = 120):
    """`nsfwoid score …` as a process, without blocking the loop that serves the test's image hosts."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nsfwoid", "score", *args, env={**os.environ, **(env or {})},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout)
    except TimeoutError:  # a run that hangs fails its test, and is not left running
        process.kill()
        await process.wait()
        raise
    return process.returncode, stdout.decode(errors="surrogateescape"), stderr.decode()


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def photos(tmp_path):
    """A directory tree of real images, one non-image, and one byte-identical copy."""
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    for name in ("brick.jpg", "retina.jpg"):
        shutil.copy(images.FIDELITY / name, root / name)
    shutil.copy(images.FIDELITY / "warm_flat.png", root / "nested" / "warm_flat.png")
    shutil.copy(images.FIDELITY / "brick.jpg", root / "nested" / "brick_copy.jpg")
    (root / "nested" / "notes.txt").write_text("not an image, and not walked: no image suffix")
    (root / "nested" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    return root


class Host:
    """A loopback image host that records concurrency, attempts and User-Agents."""

    def __init__(self, delay: float = 0.0, busy_first: int = 0, retry_after: str | None = "1") -> None:
        self.delay, self.busy_first, self.retry_after = delay, busy_first, retry_after
        self.active = self.peak = 0
        self.attempts: dict[str, int] = {}
        self.agents: set[str] = set()

    async def image(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.attempts[name] = self.attempts.get(name, 0) + 1
        self.agents.add(request.headers.get("User-Agent", ""))
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delay)
            if self.attempts[name] <= self.busy_first:
                headers = {"Retry-After": self.retry_after} if self.retry_after else {}
                return web.Response(status=503, headers=headers, text="busy")
            photo = name.split("~")[0]  # many URLs, few photographs: name~N
            return web.Response(body=(images.FIDELITY / photo).read_bytes(), content_type="image/jpeg")
        finally:
            self.active -= 1

    async def start(self, aiohttp_server):
        app = web.Application()
        app.router.add_get("/{name}", self.image)
        self.server = await aiohttp_server(app)
        return self

    def url(self, name: str) -> str:
        return str(self.server.make_url("/" + name))


async def test_a_directory_is_walked_and_scored(photos):
    code, out, err = await run_score("--exact", str(photos))
    assert code == 1  # broken.png failed
    lines = dict(reversed(line.split("\t")) for line in out.splitlines())
    assert set(lines) == {str(photos / "brick.jpg"), str(photos / "retina.jpg"),
                          str(photos / "nested" / "warm_flat.png"), str(photos / "nested" / "brick_copy.jpg")}
    assert float(lines[str(photos / "nested" / "warm_flat.png")]) == pytest.approx(EXPECTED["warm_flat.png"], abs=1e-4)
    assert f"{photos / 'nested' / 'broken.png'}: invalid-image" in err
    summary = err.strip().splitlines()[-1]
    assert "5 targets: 4 scored (1 identical to an earlier one), 1 failed" in summary
    assert "errors: invalid-image 1" in summary


async def test_jsonl_records_scores_and_errors(photos, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n{photos / 'brick.jpg'}\n\n{photos / 'missing.jpg'}\nhttp://2130706433/a.jpg\n")
    code, out, _ = await run_score("--from", str(listing), "--jsonl", "--exact")
    assert code == 1
    records = {r["target"]: r for r in jsonl(out)}
    assert len(records) == 3
    brick = records[str(photos / "brick.jpg")]
    assert set(brick) == {"target", "score", "model", "sha1", "sha1_base36", "bytes", "frames"}
    assert brick["model"]["precision"] == "fp32" and brick["model"]["id"] == brick["model"]["sha256"]
    assert brick["score"] == pytest.approx(EXPECTED["brick.jpg"], abs=1e-4)
    assert int(brick["sha1_base36"], 36) == int(brick["sha1"], 16) and brick["bytes"] == 34918
    assert records[str(photos / "missing.jpg")]["error"] == {
        "type": problem_type("file-not-found"), "title": "No such local file", "status": 404,
        "detail": f"no such file: {photos / 'missing.jpg'}"}
    invalid_url = records["http://2130706433/a.jpg"]["error"]
    assert invalid_url["type"] == problem_type("invalid-url") and invalid_url["status"] == 400


async def test_names_that_are_not_utf_8_pass_as_bytes_and_a_fifo_is_refused(tmp_path):
    """A file name is bytes: one that is not UTF-8 is walked, listed, written and resumed as those bytes, whatever
    the locale. A FIFO named like an image is refused at once: opening it would wait forever for a writer."""
    root = tmp_path / "odd"
    root.mkdir()
    odd = os.fsdecode(os.fsencode(root) + b"/caf\xe9.jpg")
    shutil.copy(images.FIDELITY / "brick.jpg", odd)
    fifo = root / "pipe.jpg"
    os.mkfifo(fifo)
    strict = {"PYTHONIOENCODING": "utf-8:strict"}  # standard input and output as a UTF-8 locale sets them up
    output, listing = tmp_path / "scores.txt", tmp_path / "list.txt"
    refused = f"{fifo}: unsupported-media-type: not a regular file"

    code, _, err = await run_score("--output", str(output), str(root), env=strict, timeout=60)
    assert code == 1 and refused in err
    score, name = output.read_bytes().split(b"\t")
    assert name == os.fsencode(odd) + b"\n"
    assert float(score) == pytest.approx(EXPECTED["brick.jpg"], abs=0.005)

    listing.write_bytes(os.fsencode(odd) + b"\n" + os.fsencode(fifo) + b"\n")
    code, _, err = await run_score("--from", str(listing), "--output", str(output), "--resume", env=strict,
                                   timeout=60)
    assert code == 0 and refused not in err and "2 skipped as already done" in err  # the FIFO failed for good
    assert output.read_bytes().count(b"\n") == 1

    code, out, _ = await run_score("--from", "-", stdin=os.fsencode(odd) + b"\n", env=strict, timeout=60)
    assert code == 0 and out == f"{score.decode()}\t{odd}\n"


def test_a_run_counts_its_stages_as_the_service_does(photos, tmp_path):
    """What bench.py's account of `nsfwoid score` reads (benchmarks/score_with_stages.py): reading and hashing
    the files (intake), both sides of the decode workers' trip, decoding, and batching each took CPU time."""
    stages = tmp_path / "stages.json"
    finished = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "score_with_stages.py"), str(stages), "score", "--output",
         str(tmp_path / "scores.tsv"), str(photos)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 1, finished.stderr  # one broken file among them
    assert len((tmp_path / "scores.tsv").read_text().splitlines()) == 4  # the images; the broken file on stderr
    counted = json.loads(stages.read_text())
    assert set(counted) == {"intake", "decode", "exchange", "batching"}
    assert all(seconds > 0 for seconds in counted.values()), counted


async def test_targets_from_standard_input(photos):
    stdin = f"{photos / 'brick.jpg'}\n{photos / 'nested'}\n".encode()
    code, out, _ = await run_score("--from", "-", "--jsonl", stdin=stdin)
    targets = sorted(r["target"] for r in jsonl(out))
    assert code == 1 and targets == sorted([str(photos / "brick.jpg"), str(photos / "nested" / "brick_copy.jpg"),
                                            str(photos / "nested" / "broken.png"),
                                            str(photos / "nested" / "warm_flat.png")])


async def test_min_score_writes_only_high_scores(photos):
    _, out, err = await run_score("--min-score", "0.1", "--jsonl", "--exact", str(photos / "nested"))
    records = jsonl(out)
    scored = [r for r in records if "score" in r]
    assert [r["target"] for r in scored] == [str(photos / "nested" / "warm_flat.png")]
    assert [r["error"]["type"] for r in records if "error" in r] == [problem_type("invalid-image")]
    assert "1 under --min-score not written" in err


def test_shards_split_the_list_without_overlap():
    targets = [f"t{i}" for i in range(10)]
    shards = [list(in_shard(iter(targets), (i, 3))) for i in range(3)]
    assert shards == [["t0", "t3", "t6", "t9"], ["t1", "t4", "t7"], ["t2", "t5", "t8"]]


async def test_shards_cover_every_target_once(photos):
    seen = []
    for index in range(3):
        _, out, _ = await run_score("--jsonl", "--shard", f"{index}/3", str(photos))
        seen += [r["target"] for r in jsonl(out)]
    assert len(seen) == len(set(seen)) == 5


async def test_identical_bytes_are_scored_once(tmp_path):
    for i in range(6):
        shutil.copy(images.FIDELITY / "warm_flat.png", tmp_path / f"copy{i}.png")
    code, out, err = await run_score("--jsonl", str(tmp_path))
    scores = {r["score"] for r in jsonl(out)}
    assert code == 0 and len(jsonl(out)) == 6 and len(scores) == 1
    assert "6 scored (5 identical to an earlier one)" in err


def peak_rss_of_a_run(directory: Path) -> int:
    """Peak RSS of `nsfwoid score` on a directory of files that all fail, with its decode workers."""
    process = subprocess.Popen([sys.executable, "-m", "nsfwoid", "score", "--concurrency", "4", str(directory)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with processes.PeakRss(process.pid) as rss:
        assert process.wait(timeout=120) == 1
    return rss.peak


def test_failed_files_are_not_kept_for_the_rest_of_the_run(tmp_path):
    """A run keeps one problem per SHA-1 that failed, to answer identical bytes later, but not the bytes."""
    size, few, many = 4 * 2**20, 8, 56
    for count in (few, many):
        (tmp_path / str(count)).mkdir()
        for i in range(count):
            (tmp_path / str(count) / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(size))
    # Both runs hold 4 files in flight. Kept, the 48 more failures would add 192 MiB.
    growth = peak_rss_of_a_run(tmp_path / str(many)) - peak_rss_of_a_run(tmp_path / str(few))
    assert growth < (many - few) * size / 2, f"{growth / 2**20:.0f} MiB more"


def test_a_kept_problem_holds_no_frames():
    def decode(data: bytes) -> None:
        try:
            raise TimeoutError
        except TimeoutError:
            raise ImageTooLarge("decoding took too long") from None

    try:
        decode(b"image bytes")
    except ImageTooLarge as problem:
        kept = detached(problem)
    assert (kept.__traceback__, kept.__context__, kept.__cause__) == (None, None, None)
    assert (kept.name, kept.detail) == ("image-too-large", "decoding took too long")


async def resumable_run(aiohttp_server, tmp_path, lines: int = 10):
    """A run scoring 80 slow URLs into an output file, started and let write `lines` lines: (its process, its
    URLs, its arguments, its output)."""
    host = await Host(delay=0.05).start(aiohttp_server)
    urls = [host.url(f"brick.jpg~{i}") for i in range(80)]
    listing, output = tmp_path / "urls.txt", tmp_path / "scores.jsonl"
    listing.write_text("\n".join(urls) + "\n")
    args = ["--from", str(listing), "--jsonl", "--output", str(output), "--resume", "--concurrency", "4",
            "--per-host", "4"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nsfwoid", "score", *args, env={**os.environ, **LOOPBACK},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not output.exists() or output.read_text().count("\n") < lines):
        await asyncio.sleep(0.05)
    return process, urls, args, output


async def test_resume_after_sigkill_gives_one_line_per_target(aiohttp_server, tmp_path):
    process, urls, args, output = await resumable_run(aiohttp_server, tmp_path)
    workers = processes.decode_workers(process.pid)
    assert workers
    process.send_signal(signal.SIGKILL)
    _, killed_err = await process.communicate()
    assert b"leaked semaphore" not in killed_err and b"Warning" not in killed_err, killed_err
    # Each worker's pipe closes with the run, and the worker ends with it: nothing is left decoding.
    await helpers.until(lambda: not [worker for worker in workers if still_running(worker)])
    written = output.read_text().count("\n")
    assert 10 <= written < len(urls)  # killed in the middle
    with output.open("a") as stream:
        stream.write('{"target": "' + urls[-1][:20])  # a line cut short, as a kill during a write leaves it
    code, _, err = await run_score(*args, env=LOOPBACK)
    assert code == 0
    records = jsonl(output.read_text())
    assert sorted(r["target"] for r in records) == sorted(urls)  # each exactly once
    assert all(r["score"] == pytest.approx(EXPECTED["brick.jpg"], abs=0.005) for r in records)
    assert f"{written} skipped as already done" in err


def still_running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_sigint_and_sigterm_stop_a_run_cleanly(aiohttp_server, tmp_path, signum):
    """Ctrl-C, or Kubernetes stopping a pod, ends the run at once: its decode workers killed, its summary and how
    to go on written, no traceback, and 128 + the signal's number as exit status. Resumed, it finishes."""
    process, urls, args, output = await resumable_run(aiohttp_server, tmp_path)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert workers  # the decode workers and their forkserver
    process.send_signal(signum)
    _, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 128 + signum
    *_, summary, stopped = err.decode().splitlines()
    written = output.read_text().count("\n")
    assert summary.startswith(f"nsfwoid: {written} of {len(urls)} targets: {written} scored") and written < len(urls)
    assert stopped == f"nsfwoid: stopped by {signum.name}; the same command with --resume goes on from here"
    assert "Traceback" not in err.decode() and "Warning" not in err.decode()
    # Each ends, given a moment: its output is closed (communicate returned) while it is still tearing down.
    deadline = time.monotonic() + 5
    while (left := [worker for worker in workers if still_running(worker)]) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not left
    code, _, _ = await run_score(*args, env=LOOPBACK)
    assert code == 0 and sorted(r["target"] for r in jsonl(output.read_text())) == sorted(urls)


async def test_busy_hosts_are_retried_honouring_retry_after(aiohttp_server):
    host = await Host(busy_first=2, retry_after="1").start(aiohttp_server)
    started = time.monotonic()
    code, out, err = await run_score("--jsonl", host.url("brick.jpg"), env=LOOPBACK)
    assert code == 0, err
    assert host.attempts["brick.jpg"] == 3 and time.monotonic() - started >= 2  # two waits of Retry-After: 1
    assert jsonl(out)[0]["score"] == pytest.approx(EXPECTED["brick.jpg"], abs=0.005)
    code, out, _ = await run_score("--jsonl", "--retries", "1", host.url("retina.jpg"), env=LOOPBACK)
    assert code == 1 and host.attempts["retina.jpg"] == 2
    (error,) = (record["error"] for record in jsonl(out))
    assert error["type"] == problem_type("upstream-error") and "503" in error["detail"]


async def test_backoff_without_retry_after(aiohttp_server):
    host = await Host(busy_first=1, retry_after=None).start(aiohttp_server)
    started = time.monotonic()
    code, _, _ = await run_score(host.url("brick.jpg"), env=LOOPBACK)
    assert code == 0 and host.attempts["brick.jpg"] == 2 and time.monotonic() - started >= 1


@pytest.mark.parametrize("per_host", [2, 4])
async def test_downloads_per_host_are_capped(aiohttp_server, per_host):
    host = await Host(delay=0.3).start(aiohttp_server)
    urls = [host.url(f"brick.jpg~{i}") for i in range(12)]
    code, out, _ = await run_score("--concurrency", "8", "--per-host", str(per_host), *urls, env=LOOPBACK)
    assert code == 0 and len(out.splitlines()) == 12
    assert host.peak == per_host


async def test_user_agent_follows_wikimedia_policy(aiohttp_server):
    host = await Host().start(aiohttp_server)
    await run_score(host.url("brick.jpg"), env=LOOPBACK)
    (agent,) = host.agents
    assert re.fullmatch(r"nsfwoid/\d+\.\d+\.\d+ \(https://www\.mediawiki\.org/wiki/Nsfwoid\) aiohttp/[\d.]+", agent)


async def test_progress_lines_when_stderr_is_no_terminal(aiohttp_server):
    host = await Host(delay=0.2).start(aiohttp_server)
    urls = [host.url(f"brick.jpg~{i}") for i in range(8)]
    code, _, err = await run_score("--concurrency", "1", "--progress-every", "0.3", *urls, env=LOOPBACK)
    progress = [line for line in err.splitlines() if line.startswith("nsfwoid: progress:")]
    assert code == 0 and progress
    assert re.fullmatch(r"nsfwoid: progress: \d+/8 targets, [\d.]+/s, 0 errors, ETA \d:\d\d:\d\d", progress[0])


def test_progress_bar_on_a_terminal(photos):
    """stderr on a pseudo-terminal: tqdm's bar, with done/total, the rate and the error count."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    process = subprocess.Popen([sys.executable, "-m", "nsfwoid", "score", str(photos / "brick.jpg"),
                                str(photos / "nested" / "broken.png")],
                               stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL)
    os.close(terminal)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        screen += chunk
    process.wait(timeout=60)
    os.close(controller)
    text = screen.decode(errors="replace")
    assert re.search(r"2/2 \[", text) and "img/s" in text and "errors=1" in text


async def test_exit_status(photos, tmp_path):
    assert (await run_score(str(photos / "brick.jpg")))[0] == 0
    assert (await run_score(str(photos / "brick.jpg"), str(photos / "missing.jpg")))[0] == 1
    assert (await run_score())[0] == 2  # no targets
    assert (await run_score("--resume", str(photos)))[0] == 2  # --resume without --output
    assert (await run_score("--shard", "3/3", str(photos)))[0] == 2
    # A list that cannot be read or an output that cannot be written: one line, before any work.
    for args, why in ((["--from", str(tmp_path / "missing.txt")], "--from {}: No such file or directory"),
                      (["--from", str(tmp_path)], "--from {}: Is a directory"),
                      (["--output", str(tmp_path), str(photos)], "--output {}: Is a directory")):
        code, _, err = await run_score(*args)
        assert code == 2 and err.splitlines()[-1] == "nsfwoid: error: score: " + why.format(args[1]), err
    bad_model = tmp_path / "weights.onnx"
    bad_model.write_bytes(b"no")
    assert (await run_score("--model-path", str(bad_model), str(photos / "brick.jpg")))[0] == 2


async def test_an_output_that_cannot_be_written_stops_the_run(photos):
    """A full disk: the run stops with one line and exit status 3, which fails the backfill Job at once."""
    code, _, err = await run_score("--output", "/dev/full", str(photos / "brick.jpg"))
    assert code == 3 and err.splitlines()[-1] == "nsfwoid: cannot write to /dev/full: No space left on device"
    with open("/dev/full", "wb") as full:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nsfwoid", "score", str(photos / "brick.jpg"), stdout=full, stderr=subprocess.PIPE)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 3
    assert stderr.decode().splitlines()[-1] == "nsfwoid: cannot write to standard output: No space left on device"
    assert "Traceback" not in err + stderr.decode()


async def test_output_file_lines_are_flushed_as_they_finish(photos, tmp_path):
    output = tmp_path / "out.txt"
    code, out, _ = await run_score("--output", str(output), str(photos / "brick.jpg"), str(photos / "retina.jpg"))
    assert code == 0 and out == ""
    lines = output.read_text().splitlines()
    assert sorted(line.split("\t")[1] for line in lines) == sorted([str(photos / "brick.jpg"),
                                                                    str(photos / "retina.jpg")])
    code, _, err = await run_score("--output", str(output), "--resume", str(photos / "brick.jpg"))
    assert code == 0 and "1 skipped as already done" in err and len(output.read_text().splitlines()) == 2


async def test_resume_after_min_score_scores_nothing_again(photos, tmp_path):
    """Targets under --min-score are not written, but are finished: a resumed run does not score them again."""
    output = tmp_path / "high.txt"
    args = ["--min-score", "0.9", "--output", str(output), "--resume", str(photos)]
    code, _, err = await run_score(*args)
    assert code == 1 and output.read_text() == ""  # 4 under 0.9, and broken.png failed for good
    assert "4 under --min-score not written" in err
    code, _, err = await run_score(*args)
    assert code == 0 and "nsfwoid: 5 targets: 0 scored" in err and "5 skipped as already done" in err


@pytest.mark.parametrize("jsonl", [True, False], ids=["jsonl", "text"])
async def test_resume_tries_again_what_failed_for_a_passing_reason_only(aiohttp_server, tmp_path, photos, jsonl):
    """One rule in both formats: a 5xx (a busy host) is tried again on --resume; a 4xx (a URL not allowed, an
    image that cannot be read) only with --retry-failed."""
    host = await Host(busy_first=1).start(aiohttp_server)  # each name's first download answers 503
    busy, refused = host.url("brick.jpg"), "http://not-allowed.invalid/a.jpg"  # refused before any lookup
    listing, output = tmp_path / "list.txt", tmp_path / "scores.out"
    listing.write_text(f"{photos / 'retina.jpg'}\n{busy}\n{refused}\n{photos / 'nested' / 'broken.png'}\n")
    args = ["--from", str(listing), "--output", str(output), "--resume", "--retries", "0",
            *(["--jsonl"] if jsonl else [])]

    code, _, err = await run_score(*args, env=LOOPBACK)
    assert code == 1 and "errors: " in err and "upstream-error 1" in err and host.attempts["brick.jpg"] == 1
    code, _, err = await run_score(*args, env=LOOPBACK)
    assert code == 0 and host.attempts["brick.jpg"] == 2, err
    assert "nsfwoid: 4 targets: 1 scored" in err and "3 skipped as already done, 1 tried again" in err
    code, _, err = await run_score(*args, "--retry-failed", env=LOOPBACK)
    assert code == 1 and host.attempts["brick.jpg"] == 2
    assert "2 skipped as already done, 2 tried again" in err
    assert "url-not-allowed 1" in err and "invalid-image 1" in err


async def test_a_directory_has_a_total_and_an_eta_on_and_off_a_terminal(photos):
    code, _, err = await run_score("--progress-every", "0", str(photos))
    progress = [line for line in err.splitlines() if line.startswith("nsfwoid: progress:")]
    assert code == 1 and progress[-1].startswith("nsfwoid: progress: 5/5 targets, ")
    assert re.search(r", 1 error, ETA 0:00:00$", progress[-1]), progress[-1]  # "1 error", not "1 errors"


async def test_local_files_have_problems_of_their_own(tmp_path):
    """Not upstream-*: a local file is no download."""
    looped = tmp_path / "loop.jpg"
    looped.symlink_to(looped)  # unreadable, even by root
    code, out, _ = await run_score("--jsonl", str(looped), str(tmp_path / "missing.jpg"))
    errors = {r["target"]: r["error"] for r in jsonl(out)}
    assert code == 1
    assert errors[str(looped)] == {"type": problem_type("file-unreadable"), "title": "The local file cannot be read",
                                   "status": 403, "detail": f"cannot read {looped}: Too many levels of symbolic links"}
    assert errors[str(tmp_path / "missing.jpg")]["type"] == problem_type("file-not-found")


WITHOUT_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]  # root, held to permission bits


@pytest.mark.root
async def test_a_directory_that_cannot_be_read_is_a_failed_target_not_a_silent_gap(tmp_path):
    """Run without the capability to read past permissions: a `chmod 000` directory inside the tree, and one given
    as the target itself, are each a failed target (file-unreadable) and the run exits 1. A symbolic link to a
    directory is followed, and a link back up the tree is not followed round."""
    processes.require_root_and(("setpriv",), "the unreadable-directory test", "root and util-linux's setpriv")
    tree, elsewhere = tmp_path / "tree", tmp_path / "elsewhere"
    for folder in (tree / "ok", tree / "locked", elsewhere):
        folder.mkdir(parents=True)
    shutil.copy(images.FIDELITY / "brick.jpg", tree / "ok" / "brick.jpg")
    shutil.copy(images.FIDELITY / "retina.jpg", tree / "locked" / "retina.jpg")
    shutil.copy(images.FIDELITY / "warm_flat.png", elsewhere / "warm.png")
    (tree / "linked").symlink_to(elsewhere)
    (tree / "ok" / "up").symlink_to(tree)  # a loop
    (tree / "locked").chmod(0)
    alone = tmp_path / "alone"
    alone.mkdir(mode=0)
    try:
        process = await asyncio.create_subprocess_exec(
            *WITHOUT_DAC, sys.executable, "-m", "nsfwoid", "score", str(tree), str(alone), "--jsonl",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 120)
    finally:
        (tree / "locked").chmod(0o755)
        alone.chmod(0o755)
    records = {r["target"]: r for r in jsonl(out.decode())}
    assert process.returncode == 1, err
    assert set(records) == {str(tree / "ok" / "brick.jpg"), str(tree / "linked" / "warm.png"),
                            str(tree / "locked"), str(alone)}
    for directory in (tree / "locked", alone):
        error = records[str(directory)]["error"]
        assert error["type"] == problem_type("file-unreadable") and error["status"] == 403
        assert error["detail"] == f"cannot read the directory {directory}: Permission denied"
    assert records[str(tree / "linked" / "warm.png")]["score"] == pytest.approx(EXPECTED["warm_flat.png"], abs=1e-4)
    assert "file-unreadable 2" in err.decode().splitlines()[-1]


async def test_a_self_test_that_cannot_score_is_one_line_and_status_2(photos):
    """Limits too tight for even the built-in image: the run cannot start, which no retry would change."""
    code, out, err = await run_score(str(photos / "brick.jpg"), env={"NSFWOID_DECODE_MEMORY": "100000000"})
    assert code == 2 and out == ""
    assert err.splitlines() == ["nsfwoid: self-test could not score its image: decoding needs more than the 95 MiB "
                                "a decode worker may use"], err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("source", ["a FIFO with no writer", "standard input held open"])
async def test_a_signal_stops_a_run_that_waits_on_its_list(tmp_path, signum, source):
    """The thread that reads the list may wait for ever; the run still ends at once with 128 + the signal."""
    if source == "standard input held open":
        args, stdin = ["--from", "-"], subprocess.PIPE
    else:
        fifo = tmp_path / "targets"
        os.mkfifo(fifo)
        args, stdin = ["--from", str(fifo)], subprocess.DEVNULL
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "nsfwoid", "score", *args, stdin=stdin,
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    await helpers.until(lambda: processes.decode_workers(process.pid), 60)  # started, and waiting on the list
    await asyncio.sleep(0.5)
    process.send_signal(signum)
    _, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 128 + signum, err
    assert err.decode().splitlines()[-1] == f"nsfwoid: stopped by {signal.Signals(signum).name}"
    assert b"Fatal Python error" not in err and b"Traceback" not in err


async def test_the_progress_bar_counts_only_what_a_resumed_run_does(aiohttp_server, tmp_path):
    """250 of 300 targets done earlier: the bar counts the 50 left (total, rate and ETA of those), and says how
    many were skipped. Counting the skipped ones made its rate 9,937/s and froze it for seconds."""
    host = await Host(delay=0.02).start(aiohttp_server)
    urls = [host.url(f"brick.jpg~{i}") for i in range(300)]
    listing, output = tmp_path / "urls.txt", tmp_path / "scores.jsonl"
    listing.write_text("\n".join(urls) + "\n")
    output.write_text("".join(json.dumps({"target": url, "score": 0.5}) + "\n" for url in urls[:250]))
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nsfwoid", "score", "--from", str(listing), "--jsonl", "--output", str(output),
        "--resume", stdout=subprocess.DEVNULL, stderr=terminal, stdin=subprocess.DEVNULL,
        env={**os.environ, **LOOPBACK})
    os.close(terminal)
    screen = b""
    while True:
        try:
            chunk = await asyncio.to_thread(os.read, controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    await asyncio.wait_for(process.wait(), 60)
    os.close(controller)
    final = screen.decode(errors="replace").replace("\r", "\n").strip().splitlines()
    bar = next(line for line in reversed(final) if "img/s" in line)
    assert process.returncode == 0 and "50/50 [" in bar and "skipped=250" in bar, bar
    assert float(re.search(r"([\d.]+)img/s", bar).group(1)) < 500, bar


async def test_names_that_would_break_a_text_line_are_quoted_and_resumed_exactly(tmp_path):
    """A file name with a line feed or a carriage return (or a leading quote) is written as a JSON string in text
    output and in the file beside it; --resume reads it back, so nothing is scored twice."""
    root = tmp_path / "odd"
    root.mkdir()
    names = ["line\nfeed.jpg", "carriage\rreturn.jpg", '"quoted.jpg', "plain.jpg"]
    for name in names:
        shutil.copy(images.FIDELITY / "brick.jpg", root / name)
    (root / "empty\n.png").write_bytes(b"")  # fails: recorded beside the output, quoted too
    output = tmp_path / "scores.txt"
    code, _, err = await run_score(str(root), "--output", str(output))
    lines = output.read_text().splitlines()
    assert code == 1 and len(lines) == 4, (lines, err)
    written = {json.loads(target) if target.startswith('"') else target
               for target in (line.split("\t", 1)[1] for line in lines)}
    assert written == {str(root / name) for name in names}
    code, _, err = await run_score(str(root), "--output", str(output), "--resume")
    assert code == 0 and "0 scored" in err and "5 skipped as already done" in err, err
    assert len(output.read_text().splitlines()) == 4


async def test_a_nul_separated_list_takes_names_as_they_are(photos, tmp_path):
    """--from0: names that begin with a space or # (which --from strips or skips), ended by NUL bytes."""
    names = [" leading.jpg", "#hash.jpg"]
    for name in names:
        shutil.copy(photos / "brick.jpg", tmp_path / name)
    listing = tmp_path / "list0"
    listing.write_bytes(b"".join(str(tmp_path / name).encode() + b"\0" for name in names))
    code, out, err = await run_score("--from0", str(listing), "--jsonl")
    assert code == 0, err
    assert sorted(r["target"] for r in jsonl(out)) == sorted(str(tmp_path / name) for name in names)
    code, out, _ = await run_score("--from0", "-", "--jsonl", stdin=listing.read_bytes())
    assert code == 0 and len(jsonl(out)) == 2


@pytest.mark.parametrize("args, said", [
    (["--min-score", "1.5", "x.jpg"], "argument --min-score: '1.5' is not a score, a number from 0 to 1"),
    (["--shard", "1/0", "x.jpg"], "argument --shard: --shard '1/0': N, the number of shards, must be at least 1"),
    (["--from", "a", "--from0", "b"], "argument --from0: not allowed with argument --from"),
])
async def test_flags_out_of_range_are_refused_in_one_line(args, said):
    code, _, err = await run_score(*args)
    assert code == 2 and err.splitlines() == [f"nsfwoid score: error: {said}"], err


async def test_an_empty_file_is_said_to_be_empty_and_a_failed_urls_query_is_not_shown(aiohttp_server, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    host = await Host().start(aiohttp_server)
    failing = host.url("missing.jpg") + "?token=SECRET"  # the host has no such photo: it answers 500
    code, _, err = await run_score(str(empty), failing, env=LOOPBACK)
    assert code == 1
    assert f"nsfwoid: {empty}: missing-input: the file is empty" in err.splitlines()
    assert "SECRET" not in err and failing.split("?")[0] + "?…: upstream-error" in err
