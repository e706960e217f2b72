"""Nothing leaves the machine: onnxruntime's telemetry, and OpenVINO's (NSFWOID_PRECISION=bf16), stay off in
`nsfwoid serve` and `nsfwoid score`.

Each process runs in a network namespace of its own with only loopback up (`unshare --net`), under
`strace -f -e trace=connect`, with HOME in a temporary directory. onnxruntime's telemetry, when on, looks up
its collector within a minute of a session's creation (a DNS query, port 53) and writes a device id under
`$HOME/.cache/Microsoft`. A control run with ORT_DISABLE_TELEMETRY=0 shows that this check sees both.
OpenVINO's, when on, is sent as it is imported (DNS again) and writes an id under `$HOME/intel`; a bf16 run
is also traced for every file it writes, which must all be in the declared volume (/tmp).
Needs root (CI runs as root), strace and iproute2; slow, since each run lasts over a minute.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from nsfwoid.scoring.bf16 import bf16_refusal

from . import images, processes, reference

# onnxruntime's telemetry sends its first DNS query within a minute of a session's creation (docs/security.md).
WAIT_S = 65
# ip brings loopback up in the new namespace; strace then runs the command, following every process it starts.
# --seccomp-bpf: only the traced calls stop the process, so it starts and runs at nearly its own speed.
TRACED = ('ip link set lo up && exec strace --seccomp-bpf -f -qq -e trace=connect,openat,creat,mkdir,rename '
          '-o "$0" "$@"')
NEEDS = "root, strace and iproute2 (apt-get install strace iproute2)"

pytestmark = [pytest.mark.root, pytest.mark.processes]


@pytest.fixture(scope="module", autouse=True)
def tools():
    processes.require_root_and(("strace", "ip", "unshare", "nsenter"), "the telemetry test", NEEDS)


class Traced:
    """One nsfwoid command in its own network namespace, under strace, with its own HOME."""

    def __init__(self, tmp: Path, name: str, argv: list[str], telemetry: str | None = None, stdin=None,
                 python: tuple[str, ...] = ("-m", "nsfwoid")):
        """telemetry: ORT_DISABLE_TELEMETRY's value; None leaves it unset, to the package's own default.
        python: what Python runs, nsfwoid unless told otherwise."""
        self.home = tmp / name / "home"
        self.home.mkdir(parents=True)
        self.trace = tmp / name / "connect.trace"
        # onnxruntime sends no telemetry where CI is set, as it is in CI: unset, so that the runs show what a
        # server or a laptop would do.
        env = {key: value for key, value in os.environ.items() if key not in ("ORT_DISABLE_TELEMETRY", "CI")}
        env.update(HOME=str(self.home), NSFWOID_LOG_LEVEL="warning")
        if telemetry is not None:
            env["ORT_DISABLE_TELEMETRY"] = telemetry
        self.process = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", TRACED, str(self.trace), sys.executable, *python, *argv],
            env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run_in_namespace(self, code: str, *args: str, timeout: float = 30) -> str:
        """Python code run in this command's network namespace, where its loopback is."""
        return subprocess.run(["nsenter", f"--net=/proc/{self.process.pid}/ns/net", sys.executable, "-c", code,
                               *args], capture_output=True, text=True, timeout=timeout, check=True).stdout

    def stop(self) -> tuple[str, str]:
        """SIGTERM to nsfwoid itself (strace's child), then its output once strace has ended."""
        for child in psutil.Process(self.process.pid).children():
            child.send_signal(signal.SIGTERM)
        return self.process.communicate(timeout=60)

    def connects(self) -> list[str]:
        return [line for line in self.trace.read_text().splitlines() if " connect(" in line]

    def microsoft_files(self) -> list[Path]:
        return sorted((self.home / ".cache" / "Microsoft").rglob("*"))

    def home_files(self) -> list[Path]:
        return sorted(self.home.rglob("*"))

    def written(self) -> list[str]:
        """The files and directories it created or opened for writing; Python's own byte-code caches aside."""
        written = []
        for line in self.trace.read_text().splitlines():
            call = re.search(r' (openat|creat|mkdir|rename)\((?:AT_FDCWD, )?"([^"]+)"(.*)', line)
            if call is None or re.search(r"= -1 E", line):
                continue
            name, path, rest = call.groups()
            if name == "openat" and not re.search(r"O_WRONLY|O_RDWR|O_CREAT", rest):
                continue
            if "/__pycache__/" not in path:
                written.append(path)
        return written

    def written_outside_tmp(self) -> list[str]:
        """What it wrote outside /tmp (the declared volume), /dev and /proc."""
        return [path for path in self.written() if not path.startswith(("/tmp/", "/dev/", "/proc/"))]


def goes_outside(connect: str) -> bool:
    """A connect() to anything but a Unix socket or a loopback address, or to port 53 anywhere."""
    family = re.search(r"sa_family=(\w+)", connect).group(1)
    if family in ("AF_UNIX", "AF_UNSPEC"):  # AF_UNSPEC dissolves a socket's association; it sends nothing
        return False
    port = re.search(r"sin6?_port=htons\((\d+)\)", connect)
    address = re.search(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"', connect)
    if port is None or address is None:
        return True
    host = address.group(1) or address.group(2)
    return port.group(1) == "53" or not (host.startswith("127.") or host == "::1")


# Run in the namespace as `python -c CODE URL [IMAGE]`.
SCORE = """
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], data=open(sys.argv[2], "rb").read(), method="POST",
                                 headers={"Content-Type": "image/jpeg"})
with urllib.request.urlopen(request, timeout=10) as answer:
    print(answer.read().decode())
"""
UNTIL_HEALTHY = """
import sys, time, urllib.request
deadline = time.monotonic() + 110
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(sys.argv[1] + "healthz", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
"""


def test_no_process_connects_outside_or_writes_telemetry_files_and_the_check_sees_telemetry_when_on(tmp_path):
    port, base, brick = "8080", "http://127.0.0.1:8080/", str(images.FIDELITY / "brick.jpg")
    serve = Traced(tmp_path, "serve", ["serve", "--port", port, "--host", "127.0.0.1"])
    control = Traced(tmp_path, "control", ["serve", "--port", port, "--host", "127.0.0.1"], telemetry="0")
    score = Traced(tmp_path, "score", ["score", "--from", "-"], stdin=subprocess.PIPE)
    started = time.monotonic()
    try:
        serve.run_in_namespace(UNTIL_HEALTHY, base, timeout=120)
        assert serve.process.poll() is None, serve.process.communicate()
        before = float(serve.run_in_namespace(SCORE, base, brick))
        time.sleep(max(0.0, WAIT_S - (time.monotonic() - started)))
        after = float(serve.run_in_namespace(SCORE, base, brick))
        score_out, score_err = score.process.communicate(brick + "\n", timeout=120)
    finally:
        _, serve_err = serve.stop()
        control.stop()
        if score.process.poll() is None:
            score.process.kill()

    # Each ran, and did its work, for over a minute with a session loaded.
    assert time.monotonic() - started > WAIT_S
    assert before == after == pytest.approx(reference.expected_scores()["brick.jpg"], abs=1e-4)
    assert score.process.returncode == 0, score_err
    assert float(score_out.split("\t")[0]) == pytest.approx(before, abs=1e-4)
    assert serve.process.returncode == 0, serve_err

    # Telemetry off by the package's default: no connection outside loopback, no DNS, no files.
    for run in (serve, score):
        assert [c for c in run.connects() if goes_outside(c)] == []
        assert run.microsoft_files() == []

    # Telemetry on (the control): the same check catches its DNS queries and its device id.
    outside = [c for c in control.connects() if goes_outside(c)]
    assert any("htons(53)" in c for c in outside), control.connects()
    assert any(path.name == "deviceid" for path in control.microsoft_files())


@pytest.mark.skipif(bf16_refusal() is not None, reason=f"this machine cannot run bf16: {bf16_refusal()}")
def test_openvino_sends_nothing_and_writes_only_to_the_declared_volume_and_the_check_sees_it_when_on(tmp_path):
    port, base, brick = "8081", "http://127.0.0.1:8081/", str(images.FIDELITY / "brick.jpg")
    serve = Traced(tmp_path, "serve-bf16", ["serve", "--precision", "bf16", "--port", port, "--host", "127.0.0.1"])
    score = Traced(tmp_path, "score-bf16", ["score", "--precision", "bf16", "--from", "-"], stdin=subprocess.PIPE)
    # The control: OpenVINO imported as any program would, its telemetry package present.
    control = Traced(tmp_path, "control-openvino", [], python=("-c", "import openvino, time; time.sleep(5)"))
    try:
        serve.run_in_namespace(UNTIL_HEALTHY, base, timeout=120)
        assert serve.process.poll() is None, serve.process.communicate()
        scored = float(serve.run_in_namespace(SCORE, base, brick))
        score_out, score_err = score.process.communicate(brick + "\n", timeout=120)
        control.process.communicate(timeout=60)
    finally:
        _, serve_err = serve.stop()
        if score.process.poll() is None:
            score.process.kill()
    assert serve.process.returncode == 0, serve_err
    assert score.process.returncode == 0, score_err
    assert float(score_out.split("\t")[0]) == pytest.approx(scored, abs=1e-6)

    for run in (serve, score):
        assert [c for c in run.connects() if goes_outside(c)] == []
        assert run.home_files() == [] and run.written_outside_tmp() == []

    assert any("htons(53)" in c for c in control.connects() if goes_outside(c)), control.connects()
    assert any(path.name == "openvino_ga_cid" for path in control.home_files())
    assert any(path.endswith("/intel/openvino_ga_cid") for path in control.written())
