"""Every fidelity fixture scores within 1e-4 of the reference (original Caffe weights) on the exact path."""

import dataclasses

import numpy as np
import onnxruntime
import pytest

from nsfwoid.scoring.model import CUDA, Model, ModelError, load_model
from nsfwoid.scoring.pipeline import SELFTEST_EXPECTED, SELFTEST_IMAGE, running_pipeline, self_test
from nsfwoid.scoring.sandbox import DecodePool

from . import helpers, images, reference

EXPECTED = reference.expected_scores()


def test_every_fixture_is_listed():
    on_disk = {p.name for p in images.FIDELITY.iterdir() if p.suffix != ".tsv"}
    assert on_disk == set(EXPECTED) and len(EXPECTED) == 11


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_path_matches_reference(model, name):
    data = (images.FIDELITY / name).read_bytes()
    tensor = reference.to_tensor(data, max_pixels=helpers.TEST_SETTINGS.max_pixels, exact=True)
    assert tensor.shape == (224, 224, 3) and tensor.dtype.name == "float32"
    (score,) = model.run(tensor[None])
    assert score == pytest.approx(EXPECTED[name], abs=1e-4)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_exact_path_over_http(make_client, name):
    client = await make_client(exact=True)
    body = (images.FIDELITY / name).read_bytes()
    response = await client.post("/", data=body, headers={"Content-Type": "application/octet-stream"})
    assert response.status == 200
    assert float(await response.text()) == pytest.approx(EXPECTED[name], abs=1e-4)


@pytest.mark.skipif(CUDA not in onnxruntime.get_available_providers(),
                    reason="this onnxruntime is the CPU build: install nsfwoid[gpu] on a machine with an NVIDIA GPU")
def test_exact_path_on_cuda_matches_reference():
    """The CUDA provider, with NSFWOID_TF32 at its default (off), keeps every fixture within 1e-4."""
    model = load_model(dataclasses.replace(helpers.TEST_SETTINGS, providers=(CUDA,)))
    assert model.provider == CUDA and model.fixed_batch == helpers.TEST_SETTINGS.max_batch
    scores = dict(zip(sorted(EXPECTED), model.run(reference.fixture_tensors()), strict=True))
    deviations = {name: abs(float(score) - EXPECTED[name]) for name, score in scores.items()}
    assert max(deviations.values()) <= 1e-4, deviations


class RecordingSession:
    """The real session, noting the batch size of each run."""

    def __init__(self, session) -> None:
        self.session, self.batch_sizes = session, []

    def run(self, outputs, feeds):
        self.batch_sizes += [len(batch) for batch in feeds.values()]
        return self.session.run(outputs, feeds)


def test_a_fixed_batch_scores_as_the_batch_as_it_comes(model):
    """On CUDA every run takes max_batch images (model.Model.fixed_batch); here 4, on whichever provider runs."""
    assert model.fixed_batch == (helpers.TEST_SETTINGS.max_batch if model.provider == CUDA else 0)
    tensors = reference.fixture_tensors()
    as_they_come = dataclasses.replace(model, fixed_batch=0)
    session = RecordingSession(model.session)
    fixed = dataclasses.replace(model, session=session, fixed_batch=4)
    np.testing.assert_allclose(fixed.run(tensors), as_they_come.run(tensors), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fixed.run(tensors[:1]), as_they_come.run(tensors[:1]), rtol=0, atol=1e-6)
    assert session.batch_sizes == [4, 4, 4, 4]  # 11 images: 4, 4 and 3 padded; then 1 padded


def test_selftest_image_is_the_reference_fixture():
    assert SELFTEST_IMAGE.read_bytes() == (images.FIDELITY / "warm_flat.png").read_bytes()
    assert SELFTEST_EXPECTED == EXPECTED["warm_flat.png"]


async def test_self_test_refuses_a_model_that_scores_otherwise(model):
    """The service's readiness and `nsfwoid score`'s start both rest on it: here the real model's output,
    inverted, stands for a provider that computes something else."""
    class Inverted(Model):
        def run(self, batch):
            return 1 - super().run(batch)

    async with DecodePool(helpers.TEST_SETTINGS) as pool:
        async with running_pipeline(helpers.TEST_SETTINGS, model, pool) as pipeline:
            assert await self_test(pipeline) == pytest.approx(SELFTEST_EXPECTED, abs=1e-4)
        inverted = Inverted(**vars(model))
        async with running_pipeline(helpers.TEST_SETTINGS, inverted, pool) as pipeline:
            with pytest.raises(ModelError, match=r"self-test scored 0\.709"):
                await self_test(pipeline)


def test_model_weights_are_verified(tmp_path):
    bad = tmp_path / "open-nsfw.onnx"
    bad.write_bytes(b"not the weights")
    with pytest.raises(ModelError, match="sha256"):
        load_model(dataclasses.replace(helpers.TEST_SETTINGS, model_path=str(bad)))


HYPERSENSITIVE = 0.005


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fast_path_keeps_its_stated_bound(model, name):
    """README, "Fast decode: fidelity": at most 0.005, or up to the image's own sensitivity when that is larger."""
    data = (images.FIDELITY / name).read_bytes()
    measured = reference.fast_path_deviation(model, data, np.random.default_rng(0), draws=16)
    assert measured["deviation"] <= max(HYPERSENSITIVE, measured["sensitivity"]), measured
    assert measured["exact_score"] == pytest.approx(EXPECTED[name], abs=1e-4)
