"""The command line: `nsfwoid score`, flags over environment, and `serve` with a graceful SIGTERM."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from nsfwoid.cli import build_parser, settings_from_args
from nsfwoid.config import ConfigError, Settings, available_cores

from . import images, processes, reference

EXPECTED = reference.expected_scores()
CLI = [sys.executable, "-m", "nsfwoid"]


def run_cli(*args, env=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.processes
def test_score_prints_one_line_per_target():
    paths = [str(images.FIDELITY / n) for n in ("brick.jpg", "retina.jpg")]
    result = run_cli("score", "--exact", *paths)
    assert result.returncode == 0, result.stderr
    scores = {target: float(score) for score, target in (line.split("\t") for line in result.stdout.splitlines())}
    assert set(scores) == set(paths)  # in the order they finish
    for path, name in zip(paths, ("brick.jpg", "retina.jpg"), strict=True):
        assert scores[path] == pytest.approx(EXPECTED[name], abs=1e-4)


@pytest.mark.processes
def test_score_reports_bad_inputs(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    good = str(images.FIDELITY / "brick.jpg")
    result = run_cli("score", good, str(text), str(tmp_path / "missing.jpg"), "http://2130706433/a.jpg")
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 1 and result.stdout.startswith("0.")
    errors = result.stderr.splitlines()
    assert any("notes.txt: unsupported-media-type" in e for e in errors)
    assert any("missing.jpg: file-not-found: no such file" in e for e in errors)
    assert any("invalid-url" in e for e in errors)


@pytest.mark.processes
def test_score_url_from_local_server(tmp_path):
    server = subprocess.Popen([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1",
                               "--directory", str(images.FIDELITY)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().split("port ")[1].split()[0])
        url = f"http://127.0.0.1:{port}/brick.jpg"
        refused = run_cli("score", url)  # the default allowlist is upload.wikimedia.org only
        assert refused.returncode == 1 and "url-not-allowed" in refused.stderr
        result = run_cli("score", "--exact", url, env={"NSFWOID_ALLOWED_HOSTS": "127.0.0.1",
                                                        "NSFWOID_ALLOW_PRIVATE_ADDRESSES": "true"})
        assert result.returncode == 0, result.stderr
        assert float(result.stdout.split("\t")[0]) == pytest.approx(EXPECTED["brick.jpg"], abs=1e-4)
    finally:
        server.terminate()
        server.wait()


def test_flags_override_environment_override_defaults():
    env = {"NSFWOID_PORT": "9000", "NSFWOID_MAX_BATCH": "4", "NSFWOID_EXACT": "true",
           "NSFWOID_ALLOWED_HOSTS": "a.org, *.b.org"}
    settings = Settings.load(env)
    assert (settings.port, settings.max_batch, settings.exact) == (9000, 4, True)
    assert settings.allowed_hosts == ("a.org", "*.b.org")
    assert Settings.load({}).port == 8080 and Settings.load({}).allowed_hosts == ("upload.wikimedia.org",)
    os_env = dict(os.environ)
    try:
        os.environ.update(env)
        args = build_parser().parse_args(["serve", "--port", "9100", "--no-exact"])
        settings = settings_from_args(args)
    finally:
        os.environ.clear()
        os.environ.update(os_env)
    assert (settings.port, settings.max_batch, settings.exact) == (9100, 4, False)


@pytest.mark.parametrize(("argv", "env", "runs"), [
    (["score", "a.jpg"], {}, "per core"),  # throughput: one single-threaded model run per core
    (["score", "--inference-runs", "1", "a.jpg"], {}, 1),
    (["score", "a.jpg"], {"NSFWOID_INFERENCE_RUNS": "1"}, 1),
    (["serve"], {}, 1),  # latency: one run on every core
])
def test_score_runs_the_model_once_per_core_unless_told(monkeypatch, argv, env, runs):
    monkeypatch.delenv("NSFWOID_INFERENCE_RUNS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    cores = available_cores()
    assert settings.inference_run_count == (cores if runs == "per core" else runs)
    assert settings.inference_thread_count == max(1, cores // settings.inference_run_count)


@pytest.mark.processes
@pytest.mark.parametrize("env", [{"NSFWOID_PORT": "eighty"}, {"NSFWOID_EXACT": "maybe"},
                                 {"NSFWOID_MAX_INFLIGHT": "0"}, {"NSFWOID_LOG_FORMAT": "xml"},
                                 {"NSFWOID_HTTP_PROXY": "socks5://127.0.0.1:1080"},
                                 {"NSFWOID_HTTP_PROXY": "url-downloader:8080"}])
def test_bad_configuration_is_refused(env):
    with pytest.raises(ConfigError):
        Settings.load(env)
    result = run_cli("serve", env=env)
    assert result.returncode != 0 and "NSFWOID_" in result.stderr


@pytest.mark.parametrize("env, said", [
    ({"NSFWOID_PORT": "abc"}, "NSFWOID_PORT='abc' is not a whole number, such as 8080"),
    ({"NSFWOID_DECODE_TIMEOUT": "soon"}, "NSFWOID_DECODE_TIMEOUT='soon' is not a number, such as 2.5"),
    ({"NSFWOID_EXACT": "maybe"}, "NSFWOID_EXACT='maybe' is not one of true, 1, yes, on, false, 0, no, off"),
])
def test_a_value_of_the_wrong_kind_is_refused_with_the_values_it_takes(env, said):
    with pytest.raises(ConfigError) as refused:
        Settings.load(env)
    assert str(refused.value) == said


@pytest.mark.parametrize(("cpu_max", "limit"), [("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None),
                                              ("garbage\n", None), (None, None)])
def test_thread_counts_follow_the_cgroup_cpu_quota(tmp_path, cpu_max, limit):
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(path) == (min(affinity, limit) if limit else affinity)


def get(url, timeout=5.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.processes
async def test_sigterm_drains_in_flight_requests(aiohttp_server):
    from aiohttp import web

    async def slow(request):
        await asyncio.sleep(1.5)
        return web.Response(body=(images.FIDELITY / "brick.jpg").read_bytes())

    app = web.Application()
    app.router.add_get("/slow.jpg", slow)
    upstream = await aiohttp_server(app)
    server, base = await asyncio.to_thread(
        processes.start_service, stdout=subprocess.PIPE, NSFWOID_LOG_LEVEL="info", NSFWOID_LOG_FORMAT="json",
        NSFWOID_ALLOWED_HOSTS="127.0.0.1", NSFWOID_ALLOW_PRIVATE_ADDRESSES="true")
    try:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            requests = [asyncio.create_task(session.post(base + "/", data={"url": str(upstream.make_url("/slow.jpg"))}))
                        for _ in range(4)]
            await asyncio.sleep(0.5)
            server.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            # Still listening while the requests finish, so that the probe sees the drain.
            status, body = await asyncio.to_thread(get, base + "/healthz", 1)
            assert status == 503 and json.loads(body)["status"] == "draining"
            responses = await asyncio.gather(*requests)
            assert [r.status for r in responses] == [200] * 4
        assert await asyncio.to_thread(server.wait, 30) == 0
    finally:
        if server.poll() is None:
            server.kill()
    log = [json.loads(line) for line in server.stdout.read().splitlines() if line.startswith("{")]
    messages = [entry["message"] for entry in log]
    assert "draining" in messages and messages[-1] == "stopped"


@pytest.mark.processes
def test_version():
    from nsfwoid import package_version

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"nsfwoid {package_version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", package_version())


@pytest.mark.processes
def test_each_command_lists_only_the_flags_it_uses():
    serve_help, score_help = run_cli("serve", "--help").stdout, run_cli("score", "--help").stdout
    for flag in ("--host", "--port", "--max-inflight", "--drain-timeout", "--request-timeout", "--log-level"):
        assert flag in serve_help and flag not in score_help, flag
    for flag in ("--exact", "--max-frames", "--allowed-hosts", "--fetch-timeout"):
        assert flag in serve_help and flag in score_help, flag


@pytest.mark.processes
@pytest.mark.parametrize("args, env", [(["--log-level", "verbose"], {}), ([], {"NSFWOID_LOG_LEVEL": "verbose"})])
def test_unknown_log_levels_are_refused_in_one_line(args, env):
    """The flag or variable, the value and the values accepted, in one line; the usage is for --help."""
    result = run_cli("serve", *args, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "verbose" in result.stderr and "LOG_LEVEL" in result.stderr.upper().replace("-", "_")
    assert all(level in result.stderr for level in ("debug", "info", "warning", "error"))


@pytest.mark.processes
@pytest.mark.parametrize("command, args, flag", [
    ("serve", ["--log-format", "xml"], "--log-format"), ("serve", ["--port", "eighty"], "--port"),
    ("score", ["--concurrency", "0", "a.jpg"], "--concurrency"), ("score", ["--shard", "3/2", "a.jpg"], "--shard"),
])
def test_bad_flag_values_are_one_line_naming_the_flag(command, args, flag):
    result = run_cli(command, *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"nsfwoid {command}: error: argument {flag}: ") and "usage:" not in result.stderr


@pytest.mark.processes
def test_request_deadline_must_outlast_the_download():
    with pytest.raises(ConfigError, match="REQUEST_TIMEOUT"):
        Settings(request_timeout=5, fetch_timeout=10).check_serving()
    Settings(request_timeout=0, fetch_timeout=10).check_serving()  # 0: no request deadline
    result = run_cli("serve", "--request-timeout", "5", "--fetch-timeout", "10")
    assert result.returncode != 0 and "must be longer than" in result.stderr and "Traceback" not in result.stderr
    # `nsfwoid score` has no request deadline, so a long download timeout is fine there.
    assert run_cli("score", "--fetch-timeout", "60", str(images.FIDELITY / "brick.jpg")).returncode == 0


@pytest.mark.processes
def test_the_memory_for_images_must_hold_the_largest_image():
    with pytest.raises(ConfigError, match="IMAGE_MEMORY"):
        Settings(image_memory=2**20, max_image_bytes=2**21).check_serving()
    result = run_cli("serve", env={"NSFWOID_IMAGE_MEMORY": str(2**20)})
    assert result.returncode != 0 and "IMAGE_MEMORY" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.processes
def test_port_in_use_is_one_clear_line():
    server, base = processes.start_service()
    try:
        port = base.rsplit(":", 1)[1]
        result = run_cli("serve", env={"NSFWOID_HOST": "127.0.0.1", "NSFWOID_PORT": port})
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == f"nsfwoid: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert not [line for line in result.stdout.splitlines() if not line.startswith("{")]  # only ECS lines


def test_console_logs_have_colour_only_on_a_terminal(tmp_path):
    from nsfwoid.logging import configure_logging, get_logger

    with (tmp_path / "log.txt").open("w") as file:
        configure_logging("console", "info", stream=file)
        get_logger().warning("to a file", answer=42)
    configure_logging("console", "info")
    written = (tmp_path / "log.txt").read_text()
    assert "to a file" in written and "answer=42" in written and "\x1b[" not in written


@pytest.mark.processes
async def test_drain_timeout_bounds_the_exit(aiohttp_server):
    from aiohttp import web

    async def very_slow(request):
        await asyncio.sleep(30)
        return web.Response(body=b"")

    app = web.Application()
    app.router.add_get("/very-slow.jpg", very_slow)
    upstream = await aiohttp_server(app)
    server, base = await asyncio.to_thread(
        processes.start_service, NSFWOID_DRAIN_TIMEOUT="1", NSFWOID_FETCH_TIMEOUT="20", NSFWOID_REQUEST_TIMEOUT="25",
        NSFWOID_ALLOWED_HOSTS="127.0.0.1", NSFWOID_ALLOW_PRIVATE_ADDRESSES="true")
    try:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            url = str(upstream.make_url("/very-slow.jpg"))
            pending = asyncio.create_task(session.post(base + "/", data={"url": url}))
            await asyncio.sleep(0.5)
            started = asyncio.get_running_loop().time()
            server.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(server.wait, 20)
            elapsed = asyncio.get_running_loop().time() - started
            pending.cancel()
        assert code == 0, code
        # The drain timeout, at most 1 s more (1.7 s measured here), and 0.5 s for measuring on a shared machine.
        assert elapsed < 1 + 1 + 0.5, elapsed
    finally:
        if server.poll() is None:
            server.kill()


@pytest.mark.processes
@pytest.mark.parametrize("on_a_terminal", [True, False], ids=["terminal", "pipe"])
def test_logs_are_for_a_person_on_a_terminal_and_ecs_json_elsewhere(on_a_terminal):
    """NSFWOID_LOG_FORMAT unset: console lines on a TTY, ECS JSON on a pipe (as in Kubernetes)."""
    import pty

    env = {key: value for key, value in os.environ.items() if key != "NSFWOID_LOG_FORMAT"}
    env.update(NSFWOID_HOST="127.0.0.1", NSFWOID_PORT=str(processes.free_port()), NSFWOID_LOG_LEVEL="info")
    if on_a_terminal:
        reader, writer = pty.openpty()
    else:
        reader, writer = os.pipe()
    process = subprocess.Popen([sys.executable, "-m", "nsfwoid", "serve"], env=env, stdout=writer,
                               stderr=subprocess.DEVNULL)
    os.close(writer)
    seen = b""
    try:
        while b"listening" not in seen:
            chunk = os.read(reader, 4096)
            assert chunk, seen
            seen += chunk
    finally:
        process.terminate()
        process.wait(30)
        os.close(reader)
    line = next(line for line in seen.decode(errors="replace").splitlines() if "listening" in line)
    if on_a_terminal:
        plain = re.sub(r"\x1b\[[0-9;]*m", "", line)  # the console renderer's colours
        assert not plain.startswith("{") and re.search(r"\[info +\] listening +server\.address=127\.0\.0\.1", plain)
    else:
        entry = json.loads(line)
        assert (entry["message"], entry["log.level"], entry["ecs.version"]) == ("listening", "info", "1.11.0")
        assert entry["service"] == {"name": "nsfwoid"} and next(iter(entry)) == "@timestamp"


@pytest.mark.processes
def test_decode_workers_were_called_threads_and_the_old_name_still_works():
    with pytest.warns(FutureWarning, match="NSFWOID_DECODE_THREADS is deprecated: set NSFWOID_DECODE_WORKERS"):
        assert Settings.load({"NSFWOID_DECODE_THREADS": "3"}).decode_workers == 3
    with pytest.warns(FutureWarning):
        assert Settings.load({"NSFWOID_DECODE_THREADS": "3", "NSFWOID_DECODE_WORKERS": "2"}).decode_workers == 2
    assert Settings.load({"NSFWOID_DECODE_WORKERS": "2"}).decode_workers == 2
    assert "--decode-workers" in run_cli("serve", "--help").stdout
