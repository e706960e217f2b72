"""Decode workers killed or stopped from outside (the OOM killer, an operator, a freezer), against a real `nsfwoid
serve` and a real `nsfwoid score`: a death costs at most the request its worker was serving, the worker is
replaced, /healthz stays truthful, and a run never hangs. And a full disk under `nsfwoid score`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import psutil
import pytest
from PIL import Image

from nsfwoid.errors import problem_type

from . import helpers, images, processes, reference

# Real `nsfwoid` processes and their decode workers, killed and stopped.
pytestmark = pytest.mark.processes

WORKERS = 2
BRICK = (images.FIDELITY / "brick.jpg").read_bytes()
LOST = problem_type("decode-worker-lost")


@pytest.fixture
def service(request):
    env = {"NSFWOID_DECODE_WORKERS": str(WORKERS), **getattr(request, "param", {})}
    process, base = processes.start_service(**env)
    yield process, base
    process.kill()
    process.wait()


async def post(session: aiohttp.ClientSession, data: bytes) -> tuple[int, dict]:
    async with session.post("/", data=data, headers={"Content-Type": "application/octet-stream",
                                                     "Accept": "application/json"}) as response:
        return response.status, {**await response.json(content_type=None), "retry-after":
                                 response.headers.get("Retry-After")}


async def workers_restored(pid: int, session: aiohttp.ClientSession) -> list[psutil.Process]:
    """Wait until the service has WORKERS live workers, as its processes and its gauge both say."""
    async def restored() -> bool:
        metrics = await helpers.scrape(session)
        alive = [worker for worker in processes.decode_workers(pid) if worker.status() != psutil.STATUS_ZOMBIE]
        return len(alive) == WORKERS and helpers.sample_value(metrics["nsfwoid_decode_workers"]) == WORKERS

    deadline = time.monotonic() + 10
    while not await restored():
        assert time.monotonic() < deadline, "the decode workers were not replaced"
        await asyncio.sleep(0.05)
    return processes.decode_workers(pid)


async def replaced(session: aiohttp.ClientSession, cause: str) -> float:
    return helpers.sample_value((await helpers.scrape(session))["nsfwoid_decode_workers_replaced"], "_total",
                                cause=cause)


async def scores_and_is_healthy(session: aiohttp.ClientSession, times: int = 4) -> None:
    async with session.get("/healthz") as response:
        assert response.status == 200 and (await response.json())["status"] == "ok"
    for _ in range(times):
        status, body = await post(session, BRICK)
        assert status == 200 and 0 <= body["score"] <= 1, body


async def busy_worker(pid: int) -> int:
    """The worker that is decoding (spending CPU) now."""
    while not (busy := await asyncio.to_thread(processes.busy_workers, pid, 0.2)):
        pass
    return busy[0]


async def test_an_idle_worker_killed_from_outside_costs_no_request(service):
    process, base = service
    async with aiohttp.ClientSession(base) as session:
        await scores_and_is_healthy(session, 1)
        before = await replaced(session, "outside")
        first, *_ = processes.decode_workers(process.pid)
        first.send_signal(signal.SIGKILL)  # idle: as the OOM killer or an operator would
        for _ in range(5):  # every one served, also before the worker is replaced
            status, body = await post(session, BRICK)
            assert status == 200, body
        workers = await workers_restored(process.pid, session)
        assert first.pid not in {worker.pid for worker in workers}
        assert await replaced(session, "outside") == before + 1
        await scores_and_is_healthy(session)


@pytest.mark.parametrize("service", [{"NSFWOID_DECODE_TIMEOUT": "60", "NSFWOID_REQUEST_TIMEOUT": "60"}],
                         indirect=True)
async def test_a_worker_killed_while_it_decodes_costs_its_request_a_retryable_503(service):
    process, base = service
    async with aiohttp.ClientSession(base) as session:
        pending = asyncio.create_task(post(session, images.slow_gif()))
        busy = await busy_worker(process.pid)
        os.kill(busy, signal.SIGKILL)
        status, body = await pending
        assert status == 503 and body["type"] == LOST and body["retry-after"] == "1", body
        assert f"pid {busy}, SIGKILL" in body["detail"]
        await workers_restored(process.pid, session)
        await scores_and_is_healthy(session)
        assert process.poll() is None


@pytest.mark.parametrize("service", [{"NSFWOID_DECODE_TIMEOUT": "1"}], indirect=True)
async def test_a_worker_stopped_while_it_decodes_is_killed_at_the_decode_timeout(service):
    process, base = service
    async with aiohttp.ClientSession(base) as session:
        pending = asyncio.create_task(post(session, images.slow_gif()))
        stopped = psutil.Process(await busy_worker(process.pid))
        stopped.suspend()  # SIGSTOP, as a freezer would
        started = time.monotonic()
        status, body = await pending
        assert status == 503 and body["type"] == LOST and "stopped" in body["detail"], body
        assert time.monotonic() - started < 2
        await workers_restored(process.pid, session)
        assert not stopped.is_running() or stopped.status() == psutil.STATUS_ZOMBIE  # killed, not left stopped
        await scores_and_is_healthy(session)


async def test_idle_workers_stopped_from_outside_are_replaced_before_they_are_given_an_image(service):
    process, base = service
    async with aiohttp.ClientSession(base) as session:
        await scores_and_is_healthy(session, 1)
        stopped = processes.decode_workers(process.pid)
        for worker in stopped:
            worker.suspend()
        await helpers.until(lambda: all(worker.status() == psutil.STATUS_STOPPED for worker in stopped))
        status, body = await post(session, BRICK)  # no request pays for a stopped idle worker
        assert status == 200, body
        workers = await workers_restored(process.pid, session)
        assert not {worker.pid for worker in stopped} & {worker.pid for worker in workers}
        await scores_and_is_healthy(session)


def twelve_megapixels() -> bytes:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    return images.encode(Image.fromarray(small).resize((4000, 3000)), "JPEG", quality=85)


@pytest.mark.parametrize("service", [{"NSFWOID_MAX_INFLIGHT": "64"}], indirect=True)
async def test_workers_killed_again_and_again_under_load_never_cost_a_500(service):
    """Eight clients score thumbnails, 12 MP photos and bad bytes for eight seconds while a worker, busy or idle,
    is killed every 0.3 s: no answer is a 500, none is a 503 other than decode-worker-lost, /healthz says ok
    throughout, and the workers are back afterwards."""
    process, base = service
    broken = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    mix = [BRICK, (images.FIDELITY / "retina.jpg").read_bytes(), twelve_megapixels(), broken]
    answers: list[tuple[int, str]] = []
    health: list[int] = []
    stop = time.monotonic() + 8
    kills = 0

    async def client(session: aiohttp.ClientSession, number: int) -> None:
        rng = random.Random(number)
        while time.monotonic() < stop:
            status, body = await post(session, rng.choice(mix))
            answers.append((status, body.get("type", "score")))

    async def prober(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop:
            async with session.get("/healthz") as response:
                health.append(response.status)
            await asyncio.sleep(0.1)

    async def killer() -> None:
        nonlocal kills
        rng = random.Random(0)
        while time.monotonic() < stop:
            await asyncio.sleep(0.3)
            workers = processes.decode_workers(process.pid)
            if workers:
                with_pid = rng.choice(workers)
                try:
                    with_pid.send_signal(signal.SIGKILL)
                    kills += 1
                except psutil.NoSuchProcess:
                    pass

    async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(client(session, n) for n in range(8)), prober(session), killer())
        statuses = {(status, kind) for status, kind in answers}
        assert {status for status, _ in statuses} <= {200, 422, 503}, statuses
        assert {kind for status, kind in statuses if status == 503} <= {LOST}, statuses
        assert kills >= 20 and sum(status == 200 for status, _ in answers) > 100, (kills, len(answers))
        assert set(health) == {200}
        await workers_restored(process.pid, session)
        await scores_and_is_healthy(session)
        print(f"{kills} kills, {len(answers)} answers: "
              + ", ".join(f"{kind} {sum(k == kind for _, k in answers)}" for kind in sorted({k for _, k in answers})))


PIDS_CGROUPS = Path("/sys/fs/cgroup/pids")


@pytest.mark.root
async def test_workers_that_cannot_be_replaced_fail_the_service_truthfully(service, tmp_path):
    """A pod at its limit of tasks (a pids cgroup, as Kubernetes sets one) cannot fork a new worker. Both workers
    are killed: after three failed starts /healthz answers 503 failed with the reason, so that the liveness
    probe restarts the pod, and scoring answers 503 service-failed at once, never overloaded or a 500."""
    processes.require_root_and((), "the pids-limit test", "root and the cgroup v1 pids controller")
    if not (PIDS_CGROUPS / "cgroup.procs").is_file():  # the machine's, not a package .ci/run could install
        pytest.skip(f"{PIDS_CGROUPS} is missing: the pids-limit test needs the cgroup v1 pids controller")
    process, base = service
    group = PIDS_CGROUPS / f"nsfwoid-test-{os.getpid()}-{process.pid}"
    group.mkdir()
    try:
        for member in processes.service_processes(process.pid):
            (group / "cgroup.procs").write_text(str(member.pid))
        tasks = int((group / "pids.current").read_text())
        (group / "pids.max").write_text(str(tasks - WORKERS))  # no task can start once both workers are gone
        async with aiohttp.ClientSession(base) as session:
            for worker in processes.decode_workers(process.pid):
                worker.send_signal(signal.SIGKILL)
            deadline = time.monotonic() + 30
            while True:
                async with session.get("/healthz") as response:
                    health = await response.json()
                if health["status"] != "ok":
                    break
                assert time.monotonic() < deadline, "/healthz still says ok"
                await asyncio.sleep(0.1)
            assert response.status == 503 and health["status"] == "failed", health
            assert health["detail"].startswith("decode workers cannot start: "), health
            started = time.monotonic()
            status, body = await post(session, BRICK)
            assert status == 503 and body["type"] == problem_type("service-failed"), body
            assert "decode workers cannot start" in body["detail"] and time.monotonic() - started < 1
            assert helpers.sample_value((await helpers.scrape(session))["nsfwoid_decode_workers"]) == 0
    finally:
        process.kill()
        process.wait()
        for member in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(member), signal.SIGKILL)
        await helpers.until(lambda: not (group / "cgroup.procs").read_text().strip())
        group.rmdir()


@pytest.fixture
def many_photos(tmp_path: Path) -> Path:
    """120 distinct small PNGs (lossless, so no two share bytes, and each is decoded)."""
    root = tmp_path / "many"
    root.mkdir()
    base = images.photo("brick.jpg", (160, 120))
    for number in range(120):
        pixels = np.array(base)
        pixels[0, 0] = (number % 256, number // 256, 7)
        (root / f"{number:03d}.png").write_bytes(images.encode(Image.fromarray(pixels), "PNG"))
    return root


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_run_whose_workers_are_killed_and_stopped_goes_on_and_resume_finishes_it(many_photos, tmp_path):
    """A worker killed (or, every third time, stopped) every 0.15 s: the run never hangs, each target is written
    once, those whose worker died fail with a retryable 503 that the summary counts, and --resume scores them."""
    output = tmp_path / "scores.jsonl"
    args = [sys.executable, "-m", "nsfwoid", "score", str(many_photos), "--jsonl", "--output", str(output),
            "--decode-workers", str(WORKERS), "--decode-timeout", "1", "--concurrency", "4"]
    run = await asyncio.create_subprocess_exec(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kills = 0
    while run.returncode is None:
        await asyncio.sleep(0.15)
        for worker in processes.decode_workers(run.pid)[:1]:
            try:
                worker.send_signal(signal.SIGSTOP if kills % 3 == 2 else signal.SIGKILL)
                kills += 1
            except psutil.NoSuchProcess:
                pass
        if output.exists() and len(output.read_text().splitlines()) >= 110:
            break
    _, err = await asyncio.wait_for(run.communicate(), 60)  # never a hang
    records = read_lines(output)
    lost = [r for r in records if "error" in r]
    assert kills >= 3 and run.returncode in (0, 1), (kills, run.returncode, err)
    assert len({r["target"] for r in records}) == len(records) == 120
    assert all(r["error"]["type"] == LOST and r["error"]["status"] == 503 for r in lost), lost[:2]
    assert (run.returncode == 1) == bool(lost) and b"Traceback" not in err
    if lost:
        assert f"decode-worker-lost {len(lost)}".encode() in err.splitlines()[-1]
    resumed = await asyncio.create_subprocess_exec(*args, "--resume", stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(resumed.communicate(), 60)
    assert resumed.returncode == 0, err
    scored = {r["target"]: r for r in read_lines(output) if "score" in r}
    assert len(scored) == 120  # each lost target scored on resume
    assert f"{len(lost)} tried again after failing before".encode() in err or not lost


FULL_DISK = """
set -e
mount -t tmpfs -o size=16k tmpfs "$1"
set +e
"$2" -m nsfwoid score "$3" --jsonl --output "$1/scores.jsonl" --concurrency 4 2>"$4/first.err"
echo $? > "$4/first.code"
cp "$1/scores.jsonl" "$4/first.jsonl"
mount -o remount,size=4m "$1"
"$2" -m nsfwoid score "$3" --jsonl --output "$1/scores.jsonl" --concurrency 4 --resume 2>"$4/second.err"
echo $? > "$4/second.code"
cp "$1/scores.jsonl" "$4/second.jsonl"
"""


@pytest.mark.root
async def test_a_full_disk_ends_a_run_at_once_and_resume_is_exact(many_photos, tmp_path):
    """--output on a 16 KiB tmpfs (in a private mount namespace) that fills part-way: the run ends at once with one
    line naming the output and the error, status 3, and a summary that counts only the lines written. With
    space, the same command with --resume finishes: every target once, no broken line."""
    processes.require_root_and(("unshare", "mount"), "the full-disk test", "root, and util-linux's unshare and mount")
    disk, results = tmp_path / "disk", tmp_path / "results"
    disk.mkdir()
    results.mkdir()
    started = time.monotonic()
    subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", FULL_DISK, "full-disk",
                    str(disk), sys.executable, str(many_photos), str(results)], check=True, timeout=240)
    first_code = int((results / "first.code").read_text())
    first_err = (results / "first.err").read_text().splitlines()
    assert first_code == 3, first_err
    assert first_err[-1] == f"nsfwoid: cannot write to {disk}/scores.jsonl: No space left on device", first_err
    written = (results / "first.jsonl").read_text()
    whole = written.count("\n")
    assert 0 < whole < 120 and time.monotonic() - started < 120
    summary = next(line for line in first_err if " scored (" in line)
    scored, failed = (int(summary.split(" scored")[0].rsplit(" ", 1)[1]),
                      int(summary.split(" failed")[0].rsplit(" ", 1)[1]))
    assert scored + failed == whole, (summary, whole)  # only what the output holds
    assert int((results / "second.code").read_text()) == 0, (results / "second.err").read_text()
    lines = (results / "second.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.endswith("}") and line.startswith("{")]
    assert sorted(r["target"] for r in records) == sorted(str(p) for p in many_photos.iterdir())
    assert len(lines) - len(records) <= 1  # at most the one line the full disk cut short


def test_workers_import_the_package_whatever_the_working_directory(tmp_path):
    """Run where a folder is called nsfwoid (a checkout's parent, with the README's editable install), the decode
    workers still import the installed package, not that folder: `nsfwoid score` scores, `nsfwoid serve` is ready."""
    (tmp_path / "nsfwoid").mkdir()
    (tmp_path / "brick.jpg").write_bytes(BRICK)
    script = Path(sys.executable).with_name("nsfwoid")  # the console script, as the README runs it
    scored = subprocess.run([script, "score", "brick.jpg"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert scored.returncode == 0, scored.stderr
    assert float(scored.stdout.split()[0]) == pytest.approx(reference.expected_scores()["brick.jpg"], abs=1e-4)
    serving, _ = processes.start_service(cwd=tmp_path, command=(str(script),))  # raises unless it becomes ready
    serving.kill()
    serving.wait()
