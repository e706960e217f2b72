"""The production image as Kubernetes runs it, as closely as this machine allows without a container runtime.

Built as Blubber's `build` variant builds it: the checkout copied to /srv/app, its builder commands run there (a
venv, a non-editable install of `.[cpu]`), and only the venv kept, as the `production` variant copies it. Then
each container of the manifests is started as its pod starts it: its command (or the image's entrypoint) and
args after Kubernetes' `$(VAR)` substitution, only the environment that the image, Kubernetes and the manifest
give, the manifests' uid, Blubber's working directory, in a network namespace of its own, and in a root file
system of this machine's /usr and /etc, read-only, with the image at /srv and the manifest's volumes the only
places it can write. Needs root, unshare, chroot and ip (CI has them); slow.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from . import images, processes, reference

ROOT = Path(__file__).resolve().parents[1]
BLUBBER = yaml.safe_load((ROOT / ".pipeline" / "blubber.yaml").read_text())
MANIFESTS = [doc for name in ("nsfwoid.yaml", "backfill-job.yaml")
             for doc in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / name).read_text())]
DEPLOYMENT = next(doc for doc in MANIFESTS if doc["kind"] == "Deployment")
JOB = next(doc for doc in MANIFESTS if doc["kind"] == "Job")
SERVICES = [doc for doc in MANIFESTS if doc["kind"] == "Service"]
APP = Path(BLUBBER["lives"]["in"])  # /srv/app, the image's working directory too
# Debian's default PATH, which python3-bookworm keeps: no venv on it.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SERVICE_IP = "10.96.0.12"  # a ClusterIP, for the service links
COMPLETION_INDEX = "3"
NEEDS = "root, and util-linux's unshare, coreutils' chroot and iproute2's ip"

# The pod: ARGS = new root, image (/srv), UID:GID, then MOUNTPOINT=HOST_DIR volumes up to `--`, then the working
# directory and the command.
# Its root is a tmpfs holding this machine's /usr, /etc and the like, bound read-only, the image read-only at
# /srv, /proc, /dev with a /dev/shm of its own, and the volumes; the tmpfs is then made read-only too.
POD = r"""
set -eu
root=$1 image=$2 user=$3
shift 3
ip link set lo up
mount --make-rprivate /
mount -t tmpfs -o mode=755 tmpfs "$root"
for top in bin sbin lib lib32 lib64 libx32 usr etc var opt sys; do
    if [ -L "/$top" ]; then
        ln -s "$(readlink "/$top")" "$root/$top"
    elif [ -d "/$top" ]; then
        mkdir "$root/$top"
        mount --rbind "/$top" "$root/$top"
        findmnt -rn -o TARGET -R "$root/$top" | while read -r point; do
            mount -o remount,bind,ro "$point" 2>/dev/null || true
        done
    fi
done
mkdir "$root/proc" "$root/dev" "$root/srv"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"
mount --bind "$image" "$root/srv"
mount -o remount,bind,ro "$root/srv"
while [ "$1" != -- ]; do
    point=${1%%=*} source=${1#*=}
    mkdir -p "$root$point"
    mount --bind "$source" "$root$point"
    shift
done
shift
mount -o remount,ro "$root"
exec chroot --userspec="$user" "$root" /bin/sh -c 'cd "$0" && exec "$@"' "$@"
"""


@pytest.fixture(scope="module", autouse=True)
def tools():
    processes.require_root_and(("unshare", "chroot", "ip", "findmnt", "nsenter"), "the production-layout test", NEEDS)


pytestmark = [pytest.mark.root, pytest.mark.processes]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(workload: dict) -> dict:
    (only,) = pod_spec(workload)["containers"]
    return only


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)`: a variable defined before it is replaced; any other reference stays as written."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def pod_environment(workload: dict, fields: dict[str, str]) -> dict[str, str]:
    """What the container's process gets: the base image's PATH, Kubernetes' HOME (no passwd entry for the uid)
    and HOSTNAME, Blubber's `runs.environment`, the service links unless the pod turns them off, then the
    manifest's env in order, each value expanded over the ones before it."""
    env = {"PATH": BASE_PATH, "HOME": "/", "HOSTNAME": workload["metadata"]["name"] + "-0"}
    env.update(BLUBBER["runs"]["environment"])
    if pod_spec(workload).get("enableServiceLinks", True):
        for service in SERVICES:
            name = service["metadata"]["name"].upper().replace("-", "_")
            port = service["spec"]["ports"][0]["port"]
            address = f"tcp://{SERVICE_IP}:{port}"
            env.update({f"{name}_SERVICE_HOST": SERVICE_IP, f"{name}_SERVICE_PORT": str(port), f"{name}_PORT": address,
                        f"{name}_PORT_{port}_TCP": address, f"{name}_PORT_{port}_TCP_PROTO": "tcp",
                        f"{name}_PORT_{port}_TCP_PORT": str(port), f"{name}_PORT_{port}_TCP_ADDR": SERVICE_IP})
    for item in container(workload).get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def pod_command(workload: dict, env: dict[str, str]) -> list[str]:
    """`command` replaces the image's entrypoint; `args` follow; both expanded."""
    spec = container(workload)
    command = spec.get("command") or BLUBBER["variants"]["production"]["entrypoint"]
    return [expand(part, env) for part in [*command, *spec.get("args", [])]]


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    """The production image's /srv: the `build` variant's builders run in a copy of the checkout at /srv/app,
    and only the venv kept, as the `production` variant copies it."""
    work = tmp_path_factory.mktemp("image")
    build, production = work / "build", work / "production"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.split(b"\0")
    for name in filter(None, listed):
        source, target = ROOT / os.fsdecode(name), build / "app" / os.fsdecode(name)
        if source.is_file() or source.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    steps = [step["command"] for builder in BLUBBER["variants"]["build"]["builders"] for step in builder.values()]
    script = "mount --make-rprivate / && mount --bind \"$0\" /srv && cd /srv/app && " + " && ".join(
        shlex.join(step) for step in steps)
    built = subprocess.run(["unshare", "--mount", "sh", "-c", script, str(build)], timeout=600, text=True,
                           env={"PATH": BASE_PATH, "HOME": str(work)}, capture_output=True)
    # The builders' own words (pip's, when it cannot reach a registry), not a CalledProcessError.
    assert built.returncode == 0, f"Blubber's build steps failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
    (source,) = BLUBBER["variants"]["production"]["copies"]
    assert Path(source["source"]) == APP / ".venv" == Path(source["destination"])
    (production / "app").mkdir(parents=True)
    subprocess.run(["cp", "-a", str(build / "app" / ".venv"), str(production / "app" / ".venv")], check=True)
    return production


def pod_volumes(workload: dict, tmp: Path, claims: dict[str, Path]) -> dict[str, Path]:
    """The container's volume mounts, prepared as the kubelet prepares them: an emptyDir, and the pod's own
    /dev/shm, are new and world-writable; a persistent volume claim's directory is given to the pod's fsGroup
    (group-owned, group-writable, setgid), if it sets one, and left as it is otherwise."""
    volumes = {volume["name"]: volume for volume in pod_spec(workload)["volumes"]}
    fs_group = pod_spec(workload)["securityContext"].get("fsGroup")
    mounts = {"/dev/shm": tmp / "dev-shm"}
    mounts["/dev/shm"].mkdir(mode=0o1777)
    mounts["/dev/shm"].chmod(0o1777)
    for mount in container(workload).get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            source = tmp / f"emptydir-{mount['name']}"
            source.mkdir()
            source.chmod(0o777)
        else:
            source = claims[volume["persistentVolumeClaim"]["claimName"]]
            if fs_group is not None:
                for path in [source, *source.rglob("*")]:
                    os.chown(path, -1, fs_group)
                    path.chmod(path.stat().st_mode | 0o060 | (0o2010 if path.is_dir() else 0))
        mounts[mount["mountPath"]] = source
    return mounts


class Pod:
    """One container of a manifest, started as its pod starts it."""

    def __init__(self, tmp: Path, image: Path, workload: dict, claims: dict[str, Path] | None = None,
                 command: list[str] | None = None, fields: dict[str, str] | None = None):
        self.root = tmp / "root"
        self.root.mkdir()
        self.volumes = pod_volumes(workload, tmp, claims or {})
        self.env = pod_environment(workload, fields or {})
        self.command = command or pod_command(workload, self.env)
        security = pod_spec(workload)["securityContext"]
        user = f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"
        mounts = [f"{point}={source}" for point, source in self.volumes.items()]
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--net", "sh", "-c", POD, "pod", str(self.root), str(image), user,
             *mounts, "--", str(APP), *self.command],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def left_behind(self) -> dict[str, list[str]]:
        """What the volumes hold, by mount point."""
        return {point: sorted(str(p.relative_to(source)) for p in source.rglob("*"))
                for point, source in self.volumes.items()}

    def enter(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A command in the pod's network namespace (a probe, a client of the Service)."""
        return subprocess.run(["nsenter", f"--net=/proc/{self.process.pid}/ns/net", *command],
                              capture_output=True, text=True, timeout=timeout)

    def exec(self, workload: dict, *command: str) -> subprocess.CompletedProcess:
        """`kubectl exec`, as a preStop hook runs: in the container's namespaces and root, as its uid."""
        security = pod_spec(workload)["securityContext"]
        uid, gid = str(security["runAsUser"]), str(security.get("runAsGroup", security["runAsUser"]))
        return subprocess.run(["nsenter", "-t", str(self.process.pid), "-m", "-n", "-r", "-w", "-S", uid, "-G", gid,
                               *command], capture_output=True, text=True, timeout=60)

    def http(self, path: str, data: bytes | None = None, content_type: str = "image/jpeg") -> tuple[int, str]:
        """An HTTP request to the pod's port 8080, as the kubelet's probe or a client would send it."""
        code = ("import sys, urllib.request, urllib.error\n"
                "data = open(sys.argv[2], 'rb').read() if sys.argv[2] else None\n"
                "request = urllib.request.Request(sys.argv[1], data=data, headers={'Content-Type': sys.argv[3]})\n"
                "try:\n    answer = urllib.request.urlopen(request, timeout=10)\n"
                "except urllib.error.HTTPError as error:\n    answer = error\n"
                "print(answer.status); print(answer.read().decode())\n")
        body = ""
        if data is not None:
            body = str(self.root.parent / "body")
            Path(body).write_bytes(data)
        result = self.enter(sys.executable, "-c", code, f"http://127.0.0.1:8080{path}", body, content_type)
        if result.returncode != 0:
            return 0, result.stderr
        status, _, text = result.stdout.partition("\n")
        return int(status), text


def probe_path(probe: dict) -> str:
    assert probe["httpGet"]["port"] == "http" and container(DEPLOYMENT)["ports"][0]["containerPort"] == 8080
    return probe["httpGet"]["path"]


def test_the_image_holds_the_installed_package_and_nothing_of_the_checkout(tmp_path, image):
    check = ("import importlib.util, nsfwoid, nsfwoid.scoring.model\n"
             "print(nsfwoid.__file__); print(nsfwoid.scoring.model.packaged_model_path())\n"
             "print(importlib.util.find_spec('tests'), importlib.util.find_spec('benchmarks'))\n")
    pod = Pod(tmp_path, image, DEPLOYMENT, command=[str(APP / ".venv/bin/python"), "-c", check])
    out, err = pod.process.communicate(timeout=120)
    assert pod.process.returncode == 0, err
    package, weights, others = out.splitlines()
    assert package == f"{APP}/.venv/lib/python3.11/site-packages/nsfwoid/__init__.py"
    assert weights.startswith(f"{APP}/.venv/lib/python3.11/site-packages/nsfwoid/")
    assert others == "None None"


def test_the_deployment_serves_answers_its_probes_and_drains_within_the_grace_period(tmp_path, image):
    spec = container(DEPLOYMENT)
    pod = Pod(tmp_path, image, DEPLOYMENT)
    try:
        deadline = time.monotonic() + spec["startupProbe"]["periodSeconds"] * spec["startupProbe"]["failureThreshold"]
        status = 0
        while time.monotonic() < deadline and pod.process.poll() is None:
            status, _ = pod.http(probe_path(spec["startupProbe"]))
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, pod.process.stderr.read() if pod.process.poll() is not None else "not healthy"
        for probe in ("readinessProbe", "livenessProbe"):
            assert pod.http(probe_path(spec[probe]))[0] == 200
        status, score = pod.http("/", (images.FIDELITY / "brick.jpg").read_bytes())
        assert status == 200 and float(score) == pytest.approx(reference.expected_scores()["brick.jpg"], abs=0.005)

        # Termination: the preStop hook runs in the container, then SIGTERM; all within the grace period.
        started = time.monotonic()
        hook = pod.exec(DEPLOYMENT, *spec["lifecycle"]["preStop"]["exec"]["command"])
        assert hook.returncode == 0, hook.stderr
        pod.process.send_signal(signal.SIGTERM)
        grace = pod_spec(DEPLOYMENT)["terminationGracePeriodSeconds"]
        _, err = pod.process.communicate(timeout=grace - (time.monotonic() - started))
        assert pod.process.returncode == 0, err
        assert time.monotonic() - started < grace
    finally:
        if pod.process.poll() is None:
            pod.process.kill()
            pod.process.wait()
    # It could write nowhere but in its volumes (the root is read-only), and left nothing in them.
    assert pod.left_behind() == {"/dev/shm": [], "/tmp": []}


def test_the_backfill_job_writes_its_shard_and_exits_0(tmp_path, image):
    data = tmp_path / "data"
    (data / "scores").mkdir(parents=True)
    photos = ("brick.jpg", "warm_flat.png")
    for name in photos:
        shutil.copy(images.FIDELITY / name, data / name)
    shards = int(JOB["spec"]["completions"])
    # Two targets in shard 3 of 64, lines 3 and 67, which the Job's --shard selects: one of each photograph.
    lines = [f"/data/{photos[number // shards % 2]}" for number in range(2 * shards)]
    (data / "targets.txt").write_text("\n".join(lines) + "\n")
    mine = [lines[int(COMPLETION_INDEX)], lines[int(COMPLETION_INDEX) + shards]]
    before = sorted(str(path.relative_to(data)) for path in data.rglob("*"))
    fields = {"metadata.annotations['batch.kubernetes.io/job-completion-index']": COMPLETION_INDEX}
    (claim,) = (volume["persistentVolumeClaim"]["claimName"] for volume in pod_spec(JOB)["volumes"]
                if "persistentVolumeClaim" in volume)
    pod = Pod(tmp_path, image, JOB, {claim: data}, fields=fields)
    _, err = pod.process.communicate(timeout=300)
    assert pod.process.returncode == 0, err
    assert pod.command[:2] == [str(APP / ".venv/bin/nsfwoid"), "score"]
    assert f"{COMPLETION_INDEX}/{shards}" in pod.command
    shard = data / "scores" / f"shard-{COMPLETION_INDEX}.jsonl"
    records = {r["target"]: r for r in map(json.loads, shard.read_text().splitlines())}
    assert sorted(records) == sorted(mine) == ["/data/brick.jpg", "/data/warm_flat.png"]
    for target, record in records.items():
        assert record["score"] == pytest.approx(reference.expected_scores()[Path(target).name], abs=0.005)
    # It wrote its shard file and nothing else.
    assert pod.left_behind() == {"/dev/shm": [], "/tmp": [], "/data": sorted([*before, "scores/shard-3.jsonl"])}
