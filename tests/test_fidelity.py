"""Every fidelity fixture scores within 1e-4 of the reference (original Caffe weights) on the exact path."""

import dataclasses

import pytest

from nsfwoid import imaging
from nsfwoid.app import SELFTEST_EXPECTED, SELFTEST_IMAGE

from . import images
from .conftest import TEST_SETTINGS

EXPECTED = images.expected_scores()


def test_every_fixture_is_listed():
    on_disk = {p.name for p in images.FIDELITY.iterdir() if p.suffix != ".tsv"}
    assert on_disk == set(EXPECTED) and len(EXPECTED) == 11


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_path_matches_reference(model, name):
    data = (images.FIDELITY / name).read_bytes()
    tensor = imaging.to_tensor(data, max_pixels=TEST_SETTINGS.max_pixels, exact=True)
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


def test_selftest_image_is_the_reference_fixture():
    assert SELFTEST_IMAGE.read_bytes() == (images.FIDELITY / "warm_flat.png").read_bytes()
    assert SELFTEST_EXPECTED == EXPECTED["warm_flat.png"]


def test_model_weights_are_verified(tmp_path):
    from nsfwoid.model import ModelError, load_model

    bad = tmp_path / "open-nsfw.onnx"
    bad.write_bytes(b"not the weights")
    with pytest.raises(ModelError, match="sha256"):
        load_model(dataclasses.replace(TEST_SETTINGS, model_path=str(bad)))
