"""Operability: Prometheus metrics, ECS logs, /_info, and the deployment files validated strictly."""

import asyncio
import functools
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import yaml
from aiohttp import hdrs

from nsfwoid.logging import configure_logging

from . import helpers, images, processes

ROOT = Path(__file__).parent.parent
SCHEMAS = images.DATA / "schemas"
BRICK = (images.FIDELITY / "brick.jpg").read_bytes()


async def test_metrics_are_exported_and_move(client, upstream, model):
    before = await helpers.scrape(client)
    url = str(upstream.make_url("/image/brick.jpg"))
    assert (await client.post("/", data={"url": url})).status == 200
    assert (await client.post("/", data=b"nope", headers={"Content-Type": "image/png"})).status == 415
    after = await helpers.scrape(client)
    expected = {
        "nsfwoid_http_requests": "counter", "nsfwoid_http_request_duration_seconds": "histogram",
        "nsfwoid_fetch_duration_seconds": "histogram", "nsfwoid_fetch_bytes": "histogram",
        "nsfwoid_preprocess_duration_seconds": "histogram", "nsfwoid_inference_duration_seconds": "histogram",
        "nsfwoid_batch_size": "histogram", "nsfwoid_score": "histogram", "nsfwoid_errors": "counter",
        "nsfwoid_inflight_requests": "gauge", "nsfwoid_model_info": "gauge", "process_resident_memory_bytes": "gauge",
        "nsfwoid_frames_scored": "histogram", "nsfwoid_stage_cpu_seconds": "counter",
    }
    for name, kind in expected.items():
        assert after[name].type == kind, name

    delta = functools.partial(helpers.metric_delta, before, after)

    assert delta("nsfwoid_http_requests", "_total", method="POST", route="/", status="200") == 1
    assert delta("nsfwoid_http_requests", "_total", method="POST", route="/", status="415") == 1
    assert delta("nsfwoid_errors", "_total", type="unsupported-media-type") == 1
    assert delta("nsfwoid_fetch_bytes", "_sum") == len(BRICK)
    assert delta("nsfwoid_score", "_count") == 1
    assert delta("nsfwoid_frames_scored", "_sum") == 1  # a still: one frame
    assert delta("nsfwoid_inference_duration_seconds", "_count") >= 1
    assert delta("nsfwoid_preprocess_duration_seconds", "_count") == 2 - 1
    # Each stage measured on its own thread or process, or on the loop between awaits, took some CPU for the image.
    for stage in ("intake", "decode", "exchange", "batching"):
        assert 0 < delta("nsfwoid_stage_cpu_seconds", "_total", stage=stage) < 5, stage
    info = after["nsfwoid_model_info"].samples[0].labels
    assert info["name"] == "open_nsfw" and info["provider"] == model.provider and len(info["sha256"]) == 64
    assert helpers.sample_value(after["nsfwoid_inflight_requests"]) == 0


async def test_methods_outside_rfc_9110_and_patch_are_labelled_other(client):
    """A client must not add series without end: aiohttp's pure-Python parser takes any token as a method,
    and its C parser every method that llhttp knows (WebDAV's among them)."""
    before = await helpers.scrape(client)
    for method in ("PROPFIND", "MKCOL", "NSFWOIDA", "NSFWOIDB"):
        assert (await client.request(method, "/")).status in (400, 405)
    after = await helpers.scrape(client)
    assert {sample.labels["method"] for sample in after["nsfwoid_http_requests"].samples} <= {*hdrs.METH_ALL, "other"}
    # PROPFIND and MKCOL, which both parsers take
    assert helpers.metric_delta(before, after, "nsfwoid_http_requests", "_total", method="other") >= 2


def test_metric_names_follow_prometheus_conventions():
    from prometheus_client import REGISTRY

    import nsfwoid.metrics  # noqa: F401

    for family in REGISTRY.collect():
        if not family.name.startswith("nsfwoid_"):
            continue
        assert re.fullmatch(r"[a-z][a-z0-9_]*", family.name), family.name
        if family.type == "histogram" and "duration" in family.name:
            assert family.name.endswith("_seconds")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)


async def test_ecs_access_and_scoring_logs(aiohttp_server, aiohttp_client):
    from nsfwoid.http.app import create_app
    from nsfwoid.http.server import AccessLogger


    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    try:
        server = await aiohttp_server(create_app(helpers.TEST_SETTINGS), access_log_class=AccessLogger)
        client = await aiohttp_client(server)
        await helpers.until_healthy(client)
        response = await client.post("/", data=BRICK, headers={"Content-Type": "image/jpeg", "X-Request-Id": "abc-123"})
        assert response.status == 200 and response.headers["X-Request-Id"] == "abc-123"
        health = await client.get("/healthz", headers={"X-Request-Id": "health-1"})
        health_bytes = len(await health.read())
        generated = (await client.get("/_info")).headers["X-Request-Id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        refused = await client.post("/", data=b"hello", headers={"Content-Type": "image/png", "X-Request-Id": "bad-1"})
        assert refused.status == 415
        for hostile_id in ("bad id; rm", "x" * 300, "a\\u0000b"):
            hostile = await client.get("/_info", headers={"X-Request-Id": hostile_id})
            assert re.fullmatch(r"[0-9a-f]{32}", hostile.headers["X-Request-Id"])
        await asyncio.sleep(0.1)  # access lines are written just after the response is sent
    finally:
        configure_logging("console", "info")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    for line in lines:
        assert line["ecs.version"] == "1.11.0" and line["service"]["name"] == "nsfwoid"
        assert line["@timestamp"].endswith("Z") and line["log.level"] and line["message"]
    access = [e for e in lines if e.get("url", {}).get("path") == "/" and "http" in e and e["trace"]["id"] == "abc-123"]
    assert len(access) == 1
    entry = access[0]
    assert entry["http"]["request"]["method"] == "POST" and entry["http"]["response"]["status_code"] == 200
    assert entry["event"]["duration"] > 0 and entry["client"]["ip"] == "127.0.0.1"
    assert entry["trace"]["id"] == "abc-123"
    assert "error" not in entry
    refused_line = next(e for e in lines if e.get("trace", {}).get("id") == "bad-1" and "http" in e)
    assert refused_line["error"]["type"] == "urn:nsfwoid:problem:unsupported-media-type"  # a 4xx says which
    health_line = next(e for e in lines if e.get("trace", {}).get("id") == "health-1" and "http" in e)
    assert health_line["http"]["response"]["body"]["bytes"] == health_bytes == int(health.headers["Content-Length"])
    scored = [e for e in lines if e["message"] == "scored"]
    assert len(scored) == 1
    assert scored[0]["file"]["hash"]["sha1"] and scored[0]["file"]["size"] == len(BRICK)
    assert 0 <= scored[0]["nsfwoid"]["score"] <= 1 and scored[0]["trace"]["id"] == "abc-123"
    assert all(json.dumps(line).find("\\u00ff\\u00d8") < 0 for line in lines)  # no image bytes
    assert sum(1 for e in lines if "http" in e and "response" in e["http"]) == len(
        [e for e in lines if e["message"].split(" ")[0] in ("GET", "POST")])


async def test_info(client):
    response = await client.get("/_info")
    body = await response.json()
    assert set(body) == {"name", "version", "description", "home"} and body["name"] == "nsfwoid"
    assert re.match(r"\d+\.\d+\.\d+", body["version"])


# Deployment files

def blubber_strict_errors(config: dict, schema: dict) -> list[str]:
    """What Blubber refuses beyond its JSON schema: the version, unknown keys, variant names, copies."""
    errors = []
    if config.get("version") != "v4":
        errors.append("version must be v4")
    defs = schema["$defs"]

    def keys_of(ref: str) -> set[str]:
        node = defs[ref.split("/")[-1]]
        keys = set(node.get("properties", {}))
        for part in node.get("allOf", []):
            if "$ref" in part:
                keys |= keys_of(part["$ref"])
            keys |= set(part.get("properties", {}))
        return keys

    top = keys_of("#/$defs/v4.Config")
    errors += [f"unknown top-level key {k}" for k in config if k not in top]
    variant_keys = keys_of("#/$defs/v4.Variant")
    builder_keys = set(defs["v4.CustomBuilder"]["properties"])
    for name, variant in config.get("variants", {}).items():
        if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9\-\.]+[a-zA-Z0-9]", name):
            errors.append(f"bad variant name {name}")
        errors += [f"{name}: unknown key {k}" for k in variant if k not in variant_keys]
        if "copies" not in variant:
            errors.append(f"{name}: copies must be explicit")
        for builder in variant.get("builders", []):
            for builder_name, body in builder.items():
                errors += [f"{name}/{builder_name}: unknown key {k}" for k in body if k not in builder_keys]
        for key in ("runs", "lives"):
            allowed = set(defs["v4.Common"]["properties"][key]["properties"])
            errors += [f"{name}.{key}: unknown key {k}" for k in variant.get(key, {}) if k not in allowed]
        for include in variant.get("includes", []):
            if include not in config["variants"]:
                errors.append(f"{name} includes unknown variant {include}")
    return errors


def test_blubber_file_is_valid():
    text = (ROOT / ".pipeline" / "blubber.yaml").read_text()
    assert text.startswith("# syntax=")
    config = yaml.safe_load(text)
    schema = json.loads((SCHEMAS / "blubber-config.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(config)
    assert blubber_strict_errors(config, schema) == []
    variants = config["variants"]
    assert {"build", "test", "production", "production-gpu"} <= set(variants)
    assert variants["test"]["entrypoint"][-2:] == ["pytest", "-q"] or "pytest" in variants["test"]["entrypoint"][0]
    for name in ("production", "production-gpu"):
        assert variants[name]["entrypoint"][-2:] == ["nsfwoid", "serve"] or variants[name]["entrypoint"][-1] == "serve"
        assert variants[name]["runs"]["insecurely"] is False
    assert any("[gpu]" in " ".join(b["install"]["command"]) for b in variants["build-gpu"]["builders"]
               if "install" in b)


def test_blubber_strict_rules_catch_mistakes():
    schema = json.loads((SCHEMAS / "blubber-config.schema.json").read_text())
    bad = {"version": "v3", "colour": 1, "variants": {"9bad": {"entrypoint": ["x"], "bogus": True}}}
    errors = blubber_strict_errors(bad, schema)
    assert any("v4" in e for e in errors) and any("colour" in e for e in errors)
    assert any("bad variant name" in e for e in errors) and any("bogus" in e for e in errors)
    assert any("copies" in e for e in errors)


def test_pipelinelib_config_is_valid():
    config = yaml.safe_load((ROOT / ".pipeline" / "config.yaml").read_text())
    schema = yaml.safe_load((SCHEMAS / "pipelinelib-pipelines.v0.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(config)
    variants = yaml.safe_load((ROOT / ".pipeline" / "blubber.yaml").read_text())["variants"]
    pipelines = config["pipelines"]
    assert {"test", "publish"} <= set(pipelines)
    for pipeline in pipelines.values():
        assert pipeline["blubberfile"] == "blubber.yaml"
        for stage in pipeline["stages"]:
            assert stage["build"] in variants
    assert any(s["build"] == "test" and s["run"] for s in pipelines["test"]["stages"])
    assert any(s["build"] == "production" and s["publish"]["image"] for s in pipelines["publish"]["stages"])


@pytest.mark.processes
def test_kubernetes_manifests_validate_strictly():
    path = ROOT / "deploy" / "kubernetes" / "nsfwoid.yaml"
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    documents = list(yaml.safe_load_all(path.read_text()))
    kinds = {d["kind"]: d for d in documents}
    assert set(kinds) == {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    pod = kinds["Deployment"]["spec"]["template"]
    assert kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    drain = next(float(e["value"]) for e in container["env"] if e["name"] == "NSFWOID_DRAIN_TIMEOUT")
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["spec"]["terminationGracePeriodSeconds"] >= drain + pause


@pytest.mark.processes
def test_backfill_job_is_an_indexed_job_of_resumable_shards():
    path = ROOT / "deploy" / "kubernetes" / "backfill-job.yaml"
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    (job,) = yaml.safe_load_all(path.read_text())
    spec = job["spec"]
    assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
    assert spec["completions"] >= spec["parallelism"] >= 1 and spec["backoffLimitPerIndex"] >= 1
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert int(env["SHARDS"]["value"]) == spec["completions"]
    index_source = env["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index_source == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    args = container["args"]
    assert args[args.index("--shard") + 1] == "$(SHARD_INDEX)/$(SHARDS)"
    assert {"--from", "--jsonl", "--output", "--resume"} <= set(args)
    assert "$(SHARD_INDEX)" in args[args.index("--output") + 1]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # Exit status 2 (a usage or model error, as test_exit_status shows) fails the Job; an eviction costs nothing.
    rules = spec["podFailurePolicy"]["rules"]
    assert {"action": "FailJob",
            "onExitCodes": {"containerName": container["name"], "operator": "In", "values": [2, 3]}} in rules
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
    deployment = next(d for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "nsfwoid.yaml").read_text())
                      if d["kind"] == "Deployment")
    served = deployment["spec"]["template"]["spec"]
    # The Deployment's, and the volume's files given to the pods' group, so that uid 900 may write shard files.
    assert pod["securityContext"] == {**served["securityContext"], "runAsGroup": 900, "fsGroup": 900}
    assert container["securityContext"] == served["containers"][0]["securityContext"]
    # The arguments are ones `nsfwoid score` takes.
    from nsfwoid.cli import build_parser

    expanded = [a.replace("$(SHARD_INDEX)", "1").replace("$(SHARDS)", "64") for a in args]
    parsed = build_parser().parse_args(container["command"][1:] + expanded)
    assert parsed.shard == (1, 64) and parsed.resume and parsed.jsonl


@pytest.mark.processes
def test_kubernetes_validation_is_strict(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  portz: []\n")
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", str(bad)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


def test_python_warnings_are_ecs_lines():
    import logging
    import warnings

    stream = io.StringIO()
    with warnings.catch_warnings():  # pytest records warnings itself: hand them back to logging for this test
        warnings.simplefilter("always")
        logging.captureWarnings(False)
        configure_logging("json", "info", stream=stream)
        try:
            warnings.warn("Corrupt EXIF data", UserWarning, stacklevel=1)
        finally:
            configure_logging("console", "info")
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["log.level"] == "warning" and "Corrupt EXIF data" in line["message"]
    assert line["ecs.version"] == "1.11.0"


@pytest.mark.processes
def test_malformed_requests_log_one_warning_without_their_bytes():
    import socket

    process, base = processes.start_service(stdout=subprocess.PIPE, NSFWOID_LOG_FORMAT="json", NSFWOID_LOG_LEVEL="info")
    port = int(base.rsplit(":", 1)[1])
    image = (images.FIDELITY / "brick.jpg").read_bytes()[:4000]
    malformed = [  # each sent in parts, a moment apart
        [b"POST /?token=SECRET HTTP/1.1\nHost: x\nContent-Type: image/jpeg\nContent-Length: 4000\n\n" + image],  # LF
        [b"GARBAGE /?token=SECRET HTTP/9.9 extra\r\nHost: x\r\n\r\n"],
        [b"POST /?token=SECRET HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
         + b"%x\r\n" % len(image) + image + b"\r\n", b"zz\r\n"],  # framing broken while the body is being read
    ]
    try:
        for parts in malformed:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
                for part in parts:
                    time.sleep(0.2)
                    connection.sendall(part)
                assert connection.recv(64)[:12] in (b"HTTP/1.0 400", b"HTTP/1.1 400")
    finally:
        process.terminate()
        log = process.communicate(timeout=30)[0]
    lines = [json.loads(line) for line in log.splitlines()]  # every line on stdout is ECS JSON
    warnings = [e for e in lines if e["message"].startswith("malformed request: ")]
    assert warnings and all(e["log.level"] == "warning" and "error" not in e for e in warnings)
    assert not [e for e in lines if e["log.level"] == "error"]
    assert "SECRET" not in log and "\\u00ff\\u00d8" not in log and "JFIF" not in log


def test_blubbers_test_variant_runs_what_ci_runs():
    blubber = yaml.safe_load((ROOT / ".pipeline" / "blubber.yaml").read_text())
    variant = blubber["variants"]["test"]
    installs = [step["command"] for builder in variant["builders"] for step in builder.values()]
    ci = (ROOT / ".ci" / "run").read_text()
    ci_command = next(line for line in ci.splitlines() if "pytest" in line)
    assert installs[-1][1:] == ["install", "--no-cache-dir", "-e", ".[test]"] and "pip install -q -e '.[test]'" in ci
    assert variant["entrypoint"] == [f"{blubber['lives']['in']}/.venv/bin/pytest"]
    assert ci_command.endswith("&& .venv/bin/pytest")


def manifests(name: str) -> dict[str, dict]:
    """A file of deploy/kubernetes/, by kind."""
    return {d["kind"]: d for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / name).read_text())}


def test_the_hpa_adds_pods_at_once_and_removes_them_slowly():
    documents = manifests("nsfwoid.yaml")
    hpa = documents["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == documents["Deployment"]["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 600
    assert all(policy["value"] <= 10 for policy in behavior["scaleDown"]["policies"] if policy["type"] == "Percent")


def kserve_errors(value, kind: str, path: str = "") -> list[str]:
    """What in `value` does not fit the type `kind` as the KServe SDK's model classes (and, below them, the
    Kubernetes client's) define it: unknown fields, and values of another type. Strict, as an API server is."""
    import kserve.models
    import kubernetes.client.models

    # The generators write list[X] and dict(str, X) (KServe), or List[X] and Dict[str, X] (Kubernetes).
    if listed := re.fullmatch(r"[Ll]ist\[(.+)\]", kind):
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [error for index, item in enumerate(value)
                for error in kserve_errors(item, listed.group(1), f"{path}[{index}]")]
    if mapped := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", kind):
        if not isinstance(value, dict):
            return [f"{path}: not a mapping"]
        item_kind = mapped.group(1) or mapped.group(2)
        return [error for key, item in value.items() for error in kserve_errors(item, item_kind, f"{path}.{key}")]
    primitive = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object,
                 "ResourceQuantity": (str, int, float), "IntOrString": (int, str)}.get(kind)
    if primitive is not None:
        fits = isinstance(value, primitive) and not (primitive is int and isinstance(value, bool))
        return [] if fits else [f"{path}: {value!r} is not {kind}"]
    model = getattr(kserve.models, kind, None) or getattr(kubernetes.client.models, kind)
    if not isinstance(value, dict):
        return [f"{path}: not a {kind}"]
    fields = {json_key: name for name, json_key in model.attribute_map.items()}
    errors = [f"{path}.{key}: no such field of {kind}" for key in value if key not in fields]
    return errors + [error for key, item in value.items() if key in fields
                     for error in kserve_errors(item, model.openapi_types[fields[key]], f"{path}.{key}")]


def test_the_inferenceservice_is_valid_by_kserve_s_own_definition():
    service = manifests("inferenceservice.yaml")["InferenceService"]
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert kserve_errors(service, "V1beta1InferenceService") == []
    # The check is strict: a misspelt field and a value of the wrong type are both found.
    broken = yaml.safe_load(yaml.safe_dump(service))
    broken["spec"]["predictor"]["minReplica"] = 4
    broken["spec"]["predictor"]["containers"][0]["readinessProbe"]["periodSeconds"] = "5"
    assert kserve_errors(broken, "V1beta1InferenceService") == [
        ".spec.predictor.minReplica: no such field of V1beta1PredictorSpec",
        ".spec.predictor.containers[0].readinessProbe.periodSeconds: '5' is not int"]


def test_the_inferenceservice_runs_the_deployment_s_pod():
    """The same image, settings, probes, resources and security context as the Deployment, so that Lift Wing's
    predictor behaves as the plain manifests do."""
    service, plain = manifests("inferenceservice.yaml")["InferenceService"], manifests("nsfwoid.yaml")
    deployment, hpa = plain["Deployment"], plain["HorizontalPodAutoscaler"]
    served, predictor = deployment["spec"]["template"]["spec"], service["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # the name KServe gives a custom predictor's container
    assert container == {**served["containers"][0], "name": "kserve-container"}
    for field in ("securityContext", "volumes", "terminationGracePeriodSeconds", "enableServiceLinks"):
        assert predictor[field] == served[field], field
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (hpa["spec"]["minReplicas"],
                                                                  hpa["spec"]["maxReplicas"])
    assert predictor["scaleMetric"] == "cpu"
    assert predictor["scaleTarget"] == hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
