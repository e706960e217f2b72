"""Wikimedia's own service-checker, unmodified (../shared/tools/service-checker), run against `nsfwoid serve` as
Wikimedia's monitoring runs it: every x-ample of /?spec, form-encoded as it encodes them, must pass (exit status 0).

Everything runs in a network namespace with only loopback, in a mount namespace whose /etc/hosts sends
upload.wikimedia.org to a loopback TLS stand-in, certified by a throwaway CA that the service alone trusts
(SSL_CERT_FILE). Needs root, util-linux's unshare and mount, iproute2's ip, and the package registry for the
checker's own dependencies (urllib3 < 2, PyYAML, gevent, statsd), installed into a venv of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from . import images, processes

pytestmark = [pytest.mark.root, pytest.mark.processes]

CHECKER = Path(__file__).resolve().parents[2] / "shared" / "tools" / "service-checker"
NEEDS = "root, util-linux's unshare and mount, and iproute2's ip"

# upload.wikimedia.org's stand-in: HTTPS on loopback, answering every GET with one photo.
STANDIN = """
import http.server, ssl, sys
from tests.upstreams import answering
server = http.server.ThreadingHTTPServer(("127.0.0.1", 443), answering(open(sys.argv[1], "rb").read(), "image/jpeg"))
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""

# In the namespaces: loopback up, /etc/hosts of our own, the stand-in, the service, then the checker.
RUN = """
set -e
ip link set lo up
mount --bind "$1/hosts" /etc/hosts
"$2" -c "$STANDIN" "$3" "$1/server.pem" &
standin=$!
SSL_CERT_FILE="$1/ca.pem" "$2" -m nsfwoid serve 2>"$1/serve.log" &
service=$!
"$2" -c "
import time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=1); break
    except OSError:
        time.sleep(0.2)
"
set +e
"$4" -t 30 127.0.0.1 http://127.0.0.1:8080
echo "exit status $?"
kill "$standin" "$service"
wait
"""


@pytest.fixture(scope="module")
def service_checker(tmp_path_factory) -> Path:
    """service-checker-swagger, installed from the unmodified copy into a venv of its own."""
    processes.require_root_and(("unshare", "mount", "ip"), "the service-checker test", NEEDS)
    if not CHECKER.is_dir():
        pytest.fail(f"{CHECKER} is missing: the service-checker test runs the copy kept in ../shared")
    root = tmp_path_factory.mktemp("service-checker")
    source = shutil.copytree(CHECKER, root / "source", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "venv", root / "venv"], check=True)
    installed = subprocess.run([root / "venv" / "bin" / "pip", "install", "-q", "urllib3<2", "PyYAML", "gevent",
                                "statsd", source], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]  # pip's own error, such as an unreachable registry
    return root / "venv" / "bin" / "service-checker-swagger"


def test_wikimedias_service_checker_passes_every_x_ample(service_checker, tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    ca.issue_cert("upload.wikimedia.org").private_key_and_cert_chain_pem.write_to_path(tmp_path / "server.pem")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n127.0.0.1 upload.wikimedia.org\n")
    env = {**os.environ, "STANDIN": STANDIN, "NSFWOID_HOST": "127.0.0.1", "NSFWOID_PORT": "8080",
           "NSFWOID_ALLOW_PRIVATE_ADDRESSES": "true", "NSFWOID_LOG_LEVEL": "warning"}
    run = subprocess.run(["unshare", "--mount", "--net", "sh", "-c", RUN, "run", str(tmp_path), sys.executable,
                          str(images.FIDELITY / "brick.jpg"), str(service_checker)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parents[1])
    log = (tmp_path / "serve.log").read_text() if (tmp_path / "serve.log").exists() else ""
    assert "exit status 0" in run.stdout, run.stdout + run.stderr + log
    assert "All endpoints are healthy" in run.stdout
    # The form x-amples' Content-Type came twice, with the same value, and was taken as one.
    assert "ConflictingHeader" not in log and "Duplicate" not in log, log
