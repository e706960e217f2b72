"""The house: folders that show the parts, imports that run one way, and a request that passes each module once
(../shared/DESIGN.md, Layout)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nsfwoid.batch import run as batch_run
from nsfwoid.batch.targets import BatchOptions
from nsfwoid.http import kserve, routes

from . import helpers, images
from .module_path import ModulePath

PACKAGE = Path(__file__).resolve().parents[1] / "nsfwoid"
PARTS = ("http", "scoring", "fetch", "batch")
# What each part may import of the others; every part may import the top level (config, errors, logging,
# metrics). The top level imports no part, except the entry point, cli.py, which starts them.
MAY_IMPORT = {"http": {"scoring", "fetch"}, "batch": {"scoring", "fetch"}, "scoring": set(), "fetch": set(),
              "": set()}
# A request's or a target's path may come back into a module it has left at most this often.
MAX_RETURNS = 4


def imports(path: Path) -> set[str]:
    """The nsfwoid modules a module imports, as dotted names."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("nsfwoid")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("nsfwoid"):
                found |= {f"{target}.{alias.name}" for alias in node.names} | {target}
    return found


def part_of(module: str) -> str:
    """The part ("http", "scoring", …) a dotted module belongs to; "" for the top level."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in PARTS else ""


def test_the_folders_are_the_parts():
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert folders == set(PARTS)
    for part in PARTS:
        modules = [path for path in (PACKAGE / part).glob("*.py") if path.name != "__init__.py"]
        assert 2 <= len(modules) <= 9, part
    assert len(list(PACKAGE.glob("*.py"))) <= 8  # the top level: what every part uses, and the entry points


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if module in ("nsfwoid.cli", "nsfwoid.__main__"):
        return
    own = part_of(module)
    for imported in imports(path):
        other = part_of(imported)
        assert other in ("", own) or other in MAY_IMPORT[own], f"{module} imports {imported}"


def test_the_decode_side_imports_nothing_of_http_or_the_metrics():
    """A decode worker imports decode_worker.py and imaging.py: neither aiohttp nor prometheus-client, directly or
    through the package."""
    for name in ("decode_worker.py", "imaging.py", "__init__.py"):
        source = (PACKAGE / "scoring" / name).read_text()
        tree = ast.parse(source)
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {n for n in names if n.split(".")[0] in ("aiohttp", "prometheus_client") or "metrics" in n}, name


def traced(monkeypatch, owner, name: str) -> list[ModulePath]:
    """Replaces the coroutine function `owner.name` with one that records the path of each call; the paths."""
    paths: list[ModulePath] = []
    original = getattr(owner, name)

    async def follow(*args):
        path = ModulePath()
        paths.append(path)
        return await path.follow(original(*args))

    monkeypatch.setattr(owner, name, follow)
    return paths


@pytest.fixture
def traced_route(monkeypatch):
    """The paths of the requests POST / serves, from the route to its answer."""
    return traced(monkeypatch, routes, "score")


@pytest.mark.parametrize(("accept", "source"), [("text/plain", "body"), ("application/json", "url")])
async def test_a_request_passes_each_module_once(traced_route, make_client, upstream, accept, source):
    client = await make_client()
    if source == "url":
        response = await client.post("/", data={"url": str(upstream.make_url("/image/brick.jpg"))},
                                     headers={"Accept": accept})
    else:
        response = await client.post("/", data=(images.FIDELITY / "brick.jpg").read_bytes(),
                                     headers={"Content-Type": "image/jpeg", "Accept": accept})
    assert response.status == 200
    (path,) = traced_route
    assert path.stops[0] == "nsfwoid.http.routes" and "nsfwoid.scoring.pipeline" in path.stops
    print(path.describe())
    assert path.returns <= MAX_RETURNS, path.describe()


async def test_a_target_of_nsfwoid_score_passes_each_module_once(model, tmp_path, monkeypatch):
    paths = traced(monkeypatch, batch_run.Run, "one")
    options = BatchOptions(targets=(str(images.FIDELITY / "brick.jpg"),), jsonl=True,
                           output=tmp_path / "out.jsonl")
    assert await batch_run.score_batch(helpers.TEST_SETTINGS, options, model) == 0
    (path,) = paths
    assert path.stops[0] == "nsfwoid.batch.run" and "nsfwoid.scoring.pipeline" in path.stops
    print(path.describe())
    assert path.returns <= MAX_RETURNS, path.describe()



@pytest.mark.parametrize("selection", ["slow and not (root or wiki or browser or processes)",
                                       "(root or wiki or browser or processes) and not slow"])
def test_every_slow_test_says_why(selection):
    """A slow test needs root, a wiki, a browser or processes of its own, and its marker says which."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", selection],
                            cwd=PACKAGE.parent, capture_output=True, text=True, timeout=120)
    assert "no tests collected" in result.stdout or " 0 selected" in result.stdout \
        or re.search(r"^0/\d+ tests collected", result.stdout, re.M), result.stdout[-2000:]


def test_the_home_page_is_the_package_s_wherever_it_is_written():
    """nsfwoid.HOME names the project in /_info and the User-Agent; the files that cannot import it repeat it."""
    import nsfwoid

    root = PACKAGE.parent
    texts = [(root / "setup.py").read_text(), (root / "openapi.yaml").read_text(),
             (root / "mediawiki" / "Nsfwoid" / "extension.json").read_text()]
    for text in texts:
        assert re.findall(r"https://www\.mediawiki\.org/wiki/\w+", text) == [nsfwoid.HOME]


async def test_a_kserve_call_passes_each_module_once(make_client, monkeypatch):
    paths = traced(monkeypatch, kserve, "predict")
    client = await make_client()
    brick = (images.FIDELITY / "brick.jpg").read_bytes()
    response = await client.post("/v1/models/open_nsfw:predict", json={"instances": [helpers.b64_instance(brick)]})
    assert response.status == 200 and "score" in (await response.json())["predictions"][0]
    (path,) = paths
    assert path.stops[0] == "nsfwoid.http.kserve" and "nsfwoid.scoring.pipeline" in path.stops
    assert path.returns <= MAX_RETURNS, path.describe()
