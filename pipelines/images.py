"""The one place component container images come from.

Two images (see images/): a CPU image for vocab, data and registry steps and a CUDA image
for training, evaluation and the probe. Precedence, highest first: an explicit argument (the CLI's
``--cpu-image`` / ``--gpu-image``), the environment (``BERTPIPE_CPU_IMAGE`` /
``BERTPIPE_GPU_IMAGE``), then the defaults below, tagged with the installed version so a
compiled pipeline names the image built from the same code.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from components.core.errors import BertpipeError

CPU_IMAGE_ENV = "BERTPIPE_CPU_IMAGE"
GPU_IMAGE_ENV = "BERTPIPE_GPU_IMAGE"
DEFAULT_REGISTRY = "ghcr.io/bertpipe"

# [registry[:port]/]path[:tag][@sha256:digest] -- the subset of the OCI reference grammar
# that `docker push` accepts; enough to catch typos and pasted whitespace before a cluster does.
_IMAGE_REFERENCE = re.compile(
    r"^(?:(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+|localhost|[a-zA-Z0-9-]+(?=:[0-9]+/))(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?$"
)


def project_version() -> str:
    """The installed bertpipe version: the default image tag."""
    try:
        return version("bertpipe")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "latest"


def default_image(kind: str) -> str:
    """``ghcr.io/bertpipe/bertpipe-{kind}:{version}``, kind being ``cpu`` or ``cuda``."""
    return f"{DEFAULT_REGISTRY}/bertpipe-{kind}:{project_version()}"


def check_image_reference(image: str, source: str) -> str:
    """Return ``image`` if it is a valid reference, else a BertpipeError naming ``source``."""
    if not _IMAGE_REFERENCE.match(image):
        raise BertpipeError(
            f"{source}: {image!r} is not a container image reference; "
            "expected something like registry.example.com/team/bertpipe-cpu:0.1.0"
        )
    return image


def _resolve(explicit: str | None, env_name: str, kind: str, flag: str) -> str:
    if explicit:
        return check_image_reference(explicit, flag)
    from_env = os.environ.get(env_name)
    if from_env:
        return check_image_reference(from_env, env_name)
    return default_image(kind)


def cpu_image(explicit: str | None = None) -> str:
    """Image for the CPU steps (vocab, data, registry)."""
    return _resolve(explicit, CPU_IMAGE_ENV, "cpu", "--cpu-image")


def gpu_image(explicit: str | None = None) -> str:
    """Image for the GPU steps: training, evaluation, probe (PyTorch CUDA runtime)."""
    return _resolve(explicit, GPU_IMAGE_ENV, "cuda", "--gpu-image")


@dataclass(frozen=True)
class Images:
    """The pair of images one compiled pipeline uses."""

    cpu: str
    gpu: str

    @classmethod
    def resolve(cls, cpu: str | None = None, gpu: str | None = None) -> "Images":
        return cls(cpu=cpu_image(cpu), gpu=gpu_image(gpu))


# Import-time values for `@dsl.component(base_image=...)`. They never raise (a bad value is
# reported when the pipeline is compiled: ClusterSettings re-resolves and checks both).
CPU_IMAGE = os.environ.get(CPU_IMAGE_ENV) or default_image("cpu")
GPU_IMAGE = os.environ.get(GPU_IMAGE_ENV) or default_image("cuda")
