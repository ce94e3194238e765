"""Image references: one source, overridable; the Dockerfiles lint clean; the lock pins."""

import pytest

from components.errors import BertpipeError
from pipelines import images


def test_explicit_beats_environment_beats_default(monkeypatch):
    monkeypatch.delenv(images.CPU_IMAGE_ENV, raising=False)
    assert images.cpu_image() == f"ghcr.io/bertpipe/bertpipe-cpu:{images.project_version()}"
    monkeypatch.setenv(images.CPU_IMAGE_ENV, "registry.example.com:5000/ml/bertpipe-cpu:nightly")
    assert images.cpu_image() == "registry.example.com:5000/ml/bertpipe-cpu:nightly"
    assert images.cpu_image("other/cpu@sha256:" + "a" * 64) == "other/cpu@sha256:" + "a" * 64


def test_resolve_pairs_both_images(monkeypatch):
    monkeypatch.setenv(images.GPU_IMAGE_ENV, "ghcr.io/team/cuda:1")
    pair = images.Images.resolve(cpu="ghcr.io/team/cpu:1")
    assert pair == images.Images(cpu="ghcr.io/team/cpu:1", gpu="ghcr.io/team/cuda:1")


@pytest.mark.parametrize("bad", ["", "has space:1", "UPPER/case:1", "repo:tag:tag", "repo@sha256:short"])
def test_bad_references_name_their_source(monkeypatch, bad):
    monkeypatch.setenv(images.GPU_IMAGE_ENV, bad or "x y")
    with pytest.raises(BertpipeError, match=images.GPU_IMAGE_ENV):
        images.gpu_image()
