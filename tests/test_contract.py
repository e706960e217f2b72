"""The API contract: openapi.yaml is valid and the running service honours it (schemathesis), and
spec.yaml's x-amples pass a service-checker-style run against a running instance."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from openapi_spec_validator import validate

from . import helpers, images, processes, upstreams

ROOT = Path(__file__).parent.parent
OPENAPI = yaml.safe_load((ROOT / "openapi.yaml").read_text())
SPEC = yaml.safe_load((ROOT / "spec.yaml").read_text())
METHODS = {"get", "post", "put", "delete", "patch", "head", "options"}


@pytest.fixture(scope="module")
def service():
    # No generated URL can be on this allowlist, so the service never reaches out while fuzzed.
    process, base = processes.start_service(NSFWOID_ALLOWED_HOSTS="allowed-host.invalid")
    yield base
    process.terminate()
    process.wait(timeout=30)


def test_openapi_is_valid():
    validate(OPENAPI)


def test_openapi_documents_every_problem_type():
    from nsfwoid.errors import ALL_PROBLEMS

    problem = OPENAPI["components"]["schemas"]["Problem"]["properties"]["type"]
    assert set(problem["x-problem-names"]) == {p.name for p in ALL_PROBLEMS}
    statuses = set(OPENAPI["paths"]["/"]["post"]["responses"])
    assert {str(p.status) for p in ALL_PROBLEMS} <= statuses
    assert OPENAPI["paths"]["/v1/score"]["post"] == OPENAPI["paths"]["/"]["post"] | {
        "summary": OPENAPI["paths"]["/v1/score"]["post"]["summary"],
        "operationId": OPENAPI["paths"]["/v1/score"]["post"]["operationId"],
    }


def test_openapi_covers_every_route():
    from nsfwoid.http.app import create_app


    served = {(r.resource.canonical, r.method.lower()) for r in create_app(helpers.TEST_SETTINGS).router.routes()
              if r.method != "HEAD"}
    documented = {(path, method) for path, item in OPENAPI["paths"].items() for method in item if method in METHODS}
    assert served == documented


@pytest.mark.processes
def test_openapi_is_served(service):
    response = requests.get(service + "/openapi.yaml", timeout=5)
    assert response.status_code == 200 and yaml.safe_load(response.text) == OPENAPI


# Fixed, and no example database, so that CI is reproducible. Some seeds (seed 4, of the first 8) make schemathesis
# 4.32 report ST201 falsely: its "invalid" multipart body has `url` as an array, an empty array sends no part
# at all, and what arrives is a valid lone `file`.
SCHEMATHESIS_SEED = "1"


@pytest.mark.processes
def test_schemathesis_finds_nothing_with_every_check(service):
    """The schemathesis CLI, every check and phase, against the running service: nothing may be reported."""
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", str(ROOT / "openapi.yaml"),
               "--url", service, "--checks", "all", "--max-examples", "50", "--seed", SCHEMATHESIS_SEED,
               "--generation-database", "none",
               "--request-timeout", "30"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout and re.search(r"\d+ generated, \d+ passed", result.stdout)


# spec.yaml and its x-amples, run as service-checker runs them.

def test_spec_and_openapi_agree():
    assert SPEC["info"]["version"] == OPENAPI["info"]["version"]
    assert SPEC["info"]["title"] == OPENAPI["info"]["title"]
    for path, item in SPEC["paths"].items():
        assert path in OPENAPI["paths"], path
        for method, operation in item.items():
            documented = OPENAPI["paths"][path][method]["responses"]
            for example in operation["x-amples"]:
                assert str(example["response"]["status"]) in documented, (path, method)


def test_x_amples_cover_the_required_checks():
    assert SPEC["paths"]["/healthz"]["get"]["x-amples"]
    assert SPEC["paths"]["/_info"]["get"]["x-amples"]
    assert any("url" in e["request"].get("body", {}) for e in SPEC["paths"]["/"]["post"]["x-amples"])


def matches(expected, actual) -> bool:
    """service-checker's rules: exact, prefix or /regex/ for strings; recursive for objects and lists."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) <= len(actual) and all(
            matches(e, a) for e, a in zip(expected, actual, strict=False))  # a prefix of actual
    if isinstance(expected, str) and not isinstance(actual, str):
        actual = json.dumps(actual) if isinstance(actual, (dict, list)) else str(actual)
    if isinstance(expected, str):
        if len(expected) > 1 and expected.startswith("/") and expected.endswith("/"):
            return re.search(expected[1:-1], actual) is not None
        return actual == expected or actual.startswith(expected)
    return expected == actual


def run_x_ample(base: str, spec: dict, path: str, method: str, example: dict) -> list[str]:
    prefix = spec.get("servers", [{"url": ""}])[0]["url"].rstrip("/") or spec.get("basePath", "").rstrip("/")
    request, expected = example.get("request", {}), example["response"]
    headers = {k.lower(): v for k, v in request.get("headers", {}).items()}
    body = request.get("body")
    kwargs = {}
    if body is not None:
        kwargs = {"json": body} if "json" in headers.get("content-type", "") else {"data": body}
    response = requests.request(method.upper(), base + prefix + path, headers=headers, params=request.get("query"),
                                timeout=30, **kwargs)
    failures = []
    if response.status_code != expected["status"]:
        failures.append(f"status {response.status_code} != {expected['status']}: {response.text[:200]}")
    for name, value in expected.get("headers", {}).items():
        if not matches(value, response.headers.get(name, "")):
            failures.append(f"header {name}: {response.headers.get(name)!r} does not match {value!r}")
    if "body" in expected:
        actual = response.json() if "json" in response.headers.get("content-type", "") else response.text
        if not matches(expected["body"], actual):
            failures.append(f"body {str(actual)[:200]!r} does not match {expected['body']!r}")
    return failures


@pytest.fixture(scope="module")
def commons_fixture():
    """A local stand-in for upload.wikimedia.org, serving a real photograph at every path."""
    with upstreams.image_host((images.FIDELITY / "brick.jpg").read_bytes(), "image/jpeg") as url:
        yield url


@pytest.mark.processes
def test_x_amples_pass_against_a_running_instance(commons_fixture):
    process, base = processes.start_service(NSFWOID_ALLOWED_HOSTS="127.0.0.1", NSFWOID_ALLOW_PRIVATE_ADDRESSES="true")
    try:
        spec = requests.get(base + "/?spec", timeout=5).json()
        assert spec == SPEC  # the served spec is spec.yaml
        ran = 0
        for path, item in spec["paths"].items():
            for method, operation in item.items():
                for example in operation.get("x-amples", []):
                    # Network-dependent examples go to the local stand-in for Commons.
                    example = json.loads(json.dumps(example).replace("https://upload.wikimedia.org", commons_fixture))
                    assert run_x_ample(base, spec, path, method, example) == [], example["title"]
                    ran += 1
        assert ran >= 4
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.processes
def test_x_ample_runner_can_fail(service):
    wrong = {"title": "wrong", "request": {}, "response": {"status": 200, "body": {"status": "broken"}}}
    assert run_x_ample(service, SPEC, "/healthz", "get", wrong)
    assert not matches("/^1\\.\\d+$/", "0.5") and matches("/^0\\.\\d+$/", "0.5\n") and matches("abc", "abcdef")
