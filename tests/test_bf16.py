"""NSFWOID_PRECISION=bf16: another model, run by OpenVINO where the processor has AVX-512 BF16 or AMX, refused
everywhere else.

The refusal is tested on every machine: in a private mount namespace whose /proc/cpuinfo has no bf16
instructions, when the real one has them. The tests of bf16 itself run where the processor has it, and skip
elsewhere, saying why, even under CI=true, as the CUDA test does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nsfwoid.scoring import imaging
from nsfwoid.scoring.bf16 import BF16_FLAGS, CPUINFO, MAX_LOGIT_DEVIATION, bf16_refusal, logit_deviation
from nsfwoid.scoring.model import load_model, model_identity

from . import helpers, images, processes, reference

HIGH_SCORES = Path(__file__).parent / "data" / "high_scores"
WHY_NOT_HERE = bf16_refusal()
needs_bf16 = pytest.mark.skipif(WHY_NOT_HERE is not None, reason=f"this machine cannot run bf16: {WHY_NOT_HERE}")


def test_a_processor_without_bf16_instructions_is_refused_naming_them(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\n")
    why = bf16_refusal(cpuinfo)
    assert why is not None and all(flag in why for flag in BF16_FLAGS)
    assert "\n" not in why


def test_a_score_of_another_precision_is_another_model():
    fp32, bf16 = (model_identity("ab" * 32, precision) for precision in ("fp32", "bf16"))
    assert fp32["id"] == fp32["sha256"] == bf16["sha256"]
    assert bf16["id"] != fp32["id"] and len(bf16["id"]) == 64
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")


@pytest.mark.root
@pytest.mark.parametrize("argv", [["serve"], ["score", str(images.FIDELITY / "brick.jpg")]])
@pytest.mark.parametrize("how", ["flag", "variable"])
def test_serve_and_score_refuse_to_start_in_one_line_with_status_2(tmp_path, argv, how):
    """On a processor without the instructions (here, /proc/cpuinfo without their flags, in a mount namespace of
    the command's own): one line naming them, status 2, and nothing started."""
    processes.require_root_and(("unshare", "mount"), "the bf16 refusal test", "root and util-linux")
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\n")
    if argv == ["serve"]:
        argv = ["serve", "--host", "127.0.0.1", "--port", str(processes.free_port())]
    command = [sys.executable, "-m", "nsfwoid", argv[0], *(["--precision", "bf16"] if how == "flag" else []),
               *argv[1:]]
    env = {"NSFWOID_PRECISION": "bf16"} if how == "variable" else {}
    script = f'mount --bind "$0" {CPUINFO} && exec "$@"'
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script, str(fake), *command], capture_output=True,
                            text=True, timeout=60, env={**os.environ, **env})
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("nsfwoid: NSFWOID_PRECISION=bf16 needs a processor with")
    assert all(flag in result.stderr for flag in BF16_FLAGS)


def scored_files() -> list[Path]:
    fixtures = [path for path in sorted(images.FIDELITY.iterdir()) if path.suffix != ".tsv"]
    return fixtures + sorted(HIGH_SCORES.glob("*.png"))


def test_the_high_scoring_fixtures_score_from_one_half_upwards_in_fp32(model):
    """Generated (tests/data/high_scores/generate.py), non-explicit pictures in the region filters use."""
    expected = json.loads((HIGH_SCORES / "scores.json").read_text())
    assert len(expected) >= 5 and min(expected.values()) >= 0.5 and max(expected.values()) <= 0.99
    for name, score in expected.items():
        crops = imaging.to_frames((HIGH_SCORES / name).read_bytes(), max_pixels=10**9, exact=True).crops
        assert float(model.run(imaging.model_input(crops))[0]) == pytest.approx(score, abs=1e-4), name


@needs_bf16
def test_bf16_scores_stay_within_the_bound_of_fp32_s(model):
    bf16 = load_model(dataclasses.replace(helpers.TEST_SETTINGS, precision="bf16"))
    deviations = {}
    for path in scored_files():
        tensor = imaging.model_input(imaging.to_frames(path.read_bytes(), max_pixels=10**9, exact=True).crops)
        fp32_score, bf16_score = float(model.run(tensor)[0]), float(bf16.run(tensor)[0])
        deviations[path.name] = logit_deviation(bf16_score, fp32_score)
    assert max(deviations.values()) <= MAX_LOGIT_DEVIATION, deviations
    assert len(deviations) >= 16


@needs_bf16
async def test_the_service_in_bf16_names_its_model_everywhere(make_client):
    client = await make_client(precision="bf16")
    health = await (await client.get("/healthz")).json()
    model = health["model"]
    assert health["status"] == "ok" and model["precision"] == "bf16" and model["provider"] == "OpenVINO CPU"
    assert model["id"] != model["sha256"] == model_identity(model["sha256"], "fp32")["id"]
    brick = (images.FIDELITY / "brick.jpg").read_bytes()
    answer = await (await client.post("/", data=brick, headers={"Content-Type": "image/jpeg",
                                                                "Accept": "application/json"})).json()
    assert answer["model"] == {key: model[key] for key in ("name", "sha256", "precision", "id")}
    assert logit_deviation(answer["score"], reference.expected_scores()["brick.jpg"]) <= MAX_LOGIT_DEVIATION
    predicted = await (await client.post("/v1/models/open_nsfw:predict",
                                         json={"instances": [helpers.b64_instance(brick)]})).json()
    assert predicted["predictions"][0]["model"]["id"] == model["id"]


@needs_bf16
@pytest.mark.processes
def test_nsfwoid_score_in_bf16_names_its_model():
    result = subprocess.run([sys.executable, "-m", "nsfwoid", "score", "--precision", "bf16", "--jsonl",
                             str(images.FIDELITY / "retina.jpg")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (record,) = map(json.loads, result.stdout.splitlines())
    assert record["model"]["precision"] == "bf16" and record["model"]["id"] != record["model"]["sha256"]
    assert logit_deviation(record["score"], reference.expected_scores()["retina.jpg"]) <= MAX_LOGIT_DEVIATION


def test_the_published_deviations_are_this_bound_s():
    """docs/performance.md gives each fixture's bf16 score beside fp32's, and the largest deviations."""
    text = (Path(__file__).parents[1] / "docs" / "performance.md").read_text()
    for path in scored_files():
        assert f"`{path.name}`" in text, path.name
    stated = float(re.search(r"largest \|Δlogit\| is (\d+\.\d+)", text).group(1))
    assert stated <= MAX_LOGIT_DEVIATION
