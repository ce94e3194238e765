"""Kubernetes settings for the pipeline's tasks: images, GPUs, resources, node pools,
secrets, retries and caching, chosen at compile time.

One frozen `ClusterSettings` holds them; `apply_training_settings`, `apply_evaluation_settings`
and `apply_cpu_step_settings` write them onto KFP tasks (kfp + kfp-kubernetes), and
`add_cluster_arguments` / `cluster_settings_from_args` give the CLI the same knobs.
Credentials only ever appear here as Kubernetes secret *names* and *key names*: plain
environment variables that look like credentials are refused.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kfp import kubernetes
from kfp.dsl import PipelineTask

from components.core.errors import BertpipeError
from pipelines import images

TASK_KINDS = ("vocab", "data", "training", "evaluation", "registry")
# Data is a pure function of its inputs: cache it. Training and evaluation log to the
# pipeline run's MLflow run and the registry step reads live registry state: run them.
DEFAULT_CACHING = {"vocab": True, "data": True, "training": False, "evaluation": False, "registry": False}
# The rest take the run id, are never cached in bert-pretraining, and `--cache` refuses them.
CACHEABLE_KINDS = ("vocab", "data")

S3_SECRET_KEYS = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
MLFLOW_SECRET_KEYS = {
    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN": "MLFLOW_TRACKING_TOKEN",
}

_CREDENTIAL_ENDINGS = ("PASSWORD", "PASSWD", "PWD", "SECRET", "SECRETS", "TOKEN", "TOKENS", "KEY", "KEYS", "CREDENTIAL", "CREDENTIALS", "COOKIE")
_URL_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s]+@", re.IGNORECASE)
_CPU_QUANTITY = re.compile(r"^([0-9]*[.])?[0-9]+m?$")
_MEMORY_QUANTITY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")
_DURATION = re.compile(r"^[0-9]+s$")
# DNS-1123 subdomain (secret names) and the label-key grammar (optional prefix/ + name).
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class Toleration:
    """A pod toleration; `parse` reads kubectl's taint syntax ``key[=value][:effect]``."""

    key: str
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None

    def __post_init__(self):
        if self.operator not in ("Equal", "Exists"):
            raise BertpipeError(f"toleration operator must be Equal or Exists, not {self.operator!r}")
        if self.effect is not None and self.effect not in _EFFECTS:
            raise BertpipeError(f"toleration effect must be one of {', '.join(_EFFECTS)}, not {self.effect!r}")
        if not _LABEL_KEY.match(self.key):
            raise BertpipeError(f"toleration key {self.key!r} is not a valid taint key")
        if self.operator == "Exists" and self.value is not None:
            raise BertpipeError(f"toleration {self.key!r}: operator Exists takes no value")

    @classmethod
    def parse(cls, spec: str) -> "Toleration":
        """``nvidia.com/gpu=present:NoSchedule`` (Equal), ``nvidia.com/gpu:NoSchedule`` or
        ``nvidia.com/gpu`` (Exists: any value, and any effect when none is given)."""
        body, sep, effect = spec.partition(":")
        if sep and not effect:
            raise BertpipeError(f"--toleration {spec!r}: nothing after ':'; give an effect like NoSchedule")
        key, has_value, value = body.partition("=")
        if not key:
            raise BertpipeError(f"--toleration {spec!r}: expected key[=value][:effect]")
        if has_value:
            if not _LABEL_VALUE.match(value):
                raise BertpipeError(f"--toleration {spec!r}: {value!r} is not a valid taint value")
            return cls(key=key, operator="Equal", value=value, effect=effect or None)
        return cls(key=key, operator="Exists", effect=effect or None)


@dataclass(frozen=True)
class Resources:
    """CPU and memory requests and limits of one pod (Kubernetes quantities)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    def __post_init__(self):
        for name in ("cpu_request", "cpu_limit"):
            if not _CPU_QUANTITY.match(getattr(self, name)):
                raise BertpipeError(f"{name} {getattr(self, name)!r}: give a CPU count like 4, 0.5 or 500m")
        for name in ("memory_request", "memory_limit"):
            if not _MEMORY_QUANTITY.match(getattr(self, name)):
                raise BertpipeError(f"{name} {getattr(self, name)!r}: give a memory size like 16Gi or 512Mi")


@dataclass(frozen=True)
class Retry:
    """KFP retry policy: wait backoff_duration, then x backoff_factor per retry."""

    num_retries: int
    backoff_duration: str = "60s"
    backoff_factor: float = 2.0
    backoff_max_duration: str = "3600s"

    def __post_init__(self):
        if self.num_retries < 0:
            raise BertpipeError(f"retries must be >= 0, not {self.num_retries}")
        for name in ("backoff_duration", "backoff_max_duration"):
            if not _DURATION.match(getattr(self, name)):
                raise BertpipeError(f"{name} {getattr(self, name)!r}: give whole seconds like 120s")
        if self.backoff_factor < 1:
            raise BertpipeError(f"backoff factor must be >= 1, not {self.backoff_factor}")


@dataclass(frozen=True)
class ClusterSettings:
    """Everything the compiled pipeline needs to know about the cluster it will run on."""

    cpu_image: str = field(default_factory=images.cpu_image)
    gpu_image: str = field(default_factory=images.gpu_image)
    gpu_type: str = "nvidia.com/gpu"
    gpus_per_node: int = 1
    training_resources: Resources = Resources("8", "16", "48Gi", "64Gi")
    cpu_step_resources: Resources = Resources("2", "4", "8Gi", "16Gi")
    gpu_node_selector: Mapping[str, str] = field(default_factory=dict)
    gpu_tolerations: tuple[Toleration, ...] = (Toleration("nvidia.com/gpu", "Exists", effect="NoSchedule"),)
    cpu_node_selector: Mapping[str, str] = field(default_factory=dict)
    cpu_tolerations: tuple[Toleration, ...] = ()
    s3_secret: str | None = "bertpipe-s3"
    mlflow_secret: str | None = "bertpipe-mlflow"
    image_pull_secrets: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    training_retry: Retry = Retry(3, "120s", 2.0, "7200s")
    cpu_step_retry: Retry = Retry(2, "30s", 2.0, "600s")
    caching: Mapping[str, bool] = field(default_factory=lambda: dict(DEFAULT_CACHING))
    shm_size: str = "16Gi"
    training_timeout_seconds: int = 0
    num_nodes: int = 1  # > 1: training phases run as a Kubeflow Trainer TrainJob (pipelines.trainjob)

    def __post_init__(self):
        images.check_image_reference(self.cpu_image, "cpu image")
        images.check_image_reference(self.gpu_image, "gpu image")
        if not self.gpu_type or not re.match(r"^[A-Za-z0-9./_-]+$", self.gpu_type):
            raise BertpipeError(f"--gpu-type {self.gpu_type!r}: give a resource name like nvidia.com/gpu")
        if self.gpus_per_node < 1:
            raise BertpipeError(f"--gpus-per-node must be >= 1, not {self.gpus_per_node}")
        if self.num_nodes < 1:
            raise BertpipeError(f"--num-nodes must be >= 1, not {self.num_nodes}")
        for selector in (self.gpu_node_selector, self.cpu_node_selector):
            for key, value in selector.items():
                _check_label(key, value)
        for name in (self.s3_secret, self.mlflow_secret, *self.image_pull_secrets):
            if name is not None and not _DNS_SUBDOMAIN.match(name):
                raise BertpipeError(f"secret name {name!r} is not a valid Kubernetes object name")
        for name, value in self.env.items():
            check_plain_env_name(name)
            check_plain_env_value(name, value)
        unknown = set(self.caching) - set(TASK_KINDS)
        if unknown:
            raise BertpipeError(f"caching for unknown task kinds {sorted(unknown)}; kinds are {', '.join(TASK_KINDS)}")
        if not _MEMORY_QUANTITY.match(self.shm_size):
            raise BertpipeError(f"--shm-size {self.shm_size!r}: give a size like 16Gi")
        if self.training_timeout_seconds < 0:
            raise BertpipeError("training timeout must be >= 0 seconds (0: none)")

    def caches(self, kind: str) -> bool:
        if kind not in TASK_KINDS:
            raise BertpipeError(f"unknown task kind {kind!r}; kinds are {', '.join(TASK_KINDS)}")
        return self.caching.get(kind, DEFAULT_CACHING[kind])


def _check_label(key: str, value: str) -> None:
    if not _LABEL_KEY.match(key) or len(key.rpartition("/")[2]) > 63:
        raise BertpipeError(f"node selector key {key!r} is not a valid label key")
    if not _LABEL_VALUE.match(value) or len(value) > 63:
        raise BertpipeError(f"node selector {key}={value!r}: not a valid label value")


def check_plain_env_name(name: str) -> None:
    """Refuse env names that carry credentials (*PASS*, *TOKEN*, *SECRET*, *KEY*, ...): those belong in a Kubernetes secret."""
    if not _ENV_NAME.match(name):
        raise BertpipeError(f"{name!r} is not a valid environment variable name")
    if any(part.startswith("PASS") or part.endswith(_CREDENTIAL_ENDINGS) for part in name.upper().split("_")):
        raise BertpipeError(
            f"{name} looks like a credential: put it in a Kubernetes secret "
            "(--s3-secret / --mlflow-secret) instead of the compiled pipeline"
        )


def check_plain_env_value(name: str, value: str) -> None:
    """Refuse values with credentials in a URL (scheme://user:password@host)."""
    if _URL_USERINFO.search(value):
        raise BertpipeError(
            f"--env {name}: the URL carries a user name/password; drop it from the URL and put the credentials in a "
            "Kubernetes secret (--mlflow-secret holds MLFLOW_TRACKING_USERNAME/PASSWORD)"
        )


def apply_training_settings(task: PipelineTask, settings: ClusterSettings) -> PipelineTask:
    """GPU image, accelerators, resources, GPU pool placement, /dev/shm, secrets, retries,
    no caching by default: a training task that survives preemption by resuming."""
    _apply_gpus(task, settings, settings.gpus_per_node)
    _apply_resources(task, settings.training_resources)
    # torch DataLoader workers and NCCL use shared memory; the container default is 64 MB.
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                               size_limit=settings.shm_size)
    if settings.training_timeout_seconds:
        kubernetes.set_timeout(task, settings.training_timeout_seconds)
    _apply_common(task, settings, settings.training_retry, "training")
    return task


def apply_evaluation_settings(task: PipelineTask, settings: ClusterSettings) -> PipelineTask:
    """One GPU in the training pool, with the GPU image, for the evaluate and probe steps: a forward pass
    over the test split, for the new model and the champion, takes hours on a CPU pod at BERT-base size
    (README, *What evaluation costs*). CPU and memory as a CPU step: the instances are tokenized already."""
    _apply_gpus(task, settings, 1)
    _apply_resources(task, settings.cpu_step_resources)
    _apply_common(task, settings, settings.cpu_step_retry, "evaluation")
    return task


def _apply_gpus(task: PipelineTask, settings: ClusterSettings, gpus: int) -> None:
    task.set_container_image(settings.gpu_image)
    task.set_accelerator_type(settings.gpu_type)
    task.set_accelerator_limit(gpus)
    _apply_placement(task, settings.gpu_node_selector, settings.gpu_tolerations)


def apply_cpu_step_settings(task: PipelineTask, settings: ClusterSettings, kind: str) -> PipelineTask:
    """CPU image, resources, CPU pool placement, secrets, retries and caching for a step of
    ``kind`` (vocab, data, registry, or training for a launcher that waits on
    a multi-node TrainJob: it gets the training retries, each starting a new TrainJob attempt)."""
    task.set_container_image(settings.cpu_image)
    _apply_resources(task, settings.cpu_step_resources)
    _apply_placement(task, settings.cpu_node_selector, settings.cpu_tolerations)
    _apply_common(task, settings, settings.training_retry if kind == "training" else settings.cpu_step_retry, kind)
    return task


def _apply_resources(task: PipelineTask, resources: Resources) -> None:
    task.set_cpu_request(resources.cpu_request).set_cpu_limit(resources.cpu_limit)
    task.set_memory_request(resources.memory_request).set_memory_limit(resources.memory_limit)


def _apply_placement(task: PipelineTask, selector: Mapping[str, str], tolerations: Sequence[Toleration]) -> None:
    for key, value in selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in tolerations:
        kubernetes.add_toleration(task, key=toleration.key, operator=toleration.operator,
                                  value=toleration.value, effect=toleration.effect)


def _apply_common(task: PipelineTask, settings: ClusterSettings, retry: Retry, kind: str) -> None:
    task.set_caching_options(enable_caching=settings.caches(kind))
    if retry.num_retries:
        task.set_retry(num_retries=retry.num_retries, backoff_duration=retry.backoff_duration,
                       backoff_factor=retry.backoff_factor, backoff_max_duration=retry.backoff_max_duration)
    if settings.s3_secret:
        kubernetes.use_secret_as_env(task, secret_name=settings.s3_secret, secret_key_to_env=S3_SECRET_KEYS)
    if settings.mlflow_secret:
        # Optional: an MLflow server without authentication needs no secret at all.
        kubernetes.use_secret_as_env(task, secret_name=settings.mlflow_secret,
                                     secret_key_to_env=MLFLOW_SECRET_KEYS, optional=True)
    for name, value in settings.env.items():
        task.set_env_variable(name, value)
    if settings.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(settings.image_pull_secrets))


# --- the CLI's knobs -------------------------------------------------------------------


def _key_value(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise BertpipeError(f"{flag} {text!r}: expected KEY=VALUE")
    return key, value


def _request_limit(text: str) -> tuple[str, str]:
    """``REQ`` (request = limit) or ``REQ:LIMIT``."""
    request, _, limit = text.partition(":")
    return request, limit or request


def _on_off(text: str, flag: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "on", "yes", "1"):
        return True
    if lowered in ("false", "off", "no", "0"):
        return False
    raise BertpipeError(f"{flag}: {text!r} is not on/off")


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """The compile-time cluster flags (used by `bertpipe compile`, `submit`, `schedule create`)."""
    group = parser.add_argument_group("Kubernetes", "where and how the compiled pipeline's tasks run")
    defaults = ClusterSettings.__dataclass_fields__
    group.add_argument("--cpu-image", help=f"image for CPU steps (default: ${images.CPU_IMAGE_ENV} or {images.default_image('cpu')})")
    group.add_argument("--gpu-image", help=f"image for training, evaluation and the probe (default: ${images.GPU_IMAGE_ENV} or {images.default_image('cuda')})")
    group.add_argument("--gpu-type", default=defaults["gpu_type"].default,
                       help="accelerator resource name requested by training pods (default: %(default)s)")
    group.add_argument("--gpus-per-node", type=int, default=defaults["gpus_per_node"].default,
                       help="GPUs per training pod; torchrun starts one process per GPU (default: %(default)s)")
    group.add_argument("--num-nodes", type=int, default=1,
                       help="nodes per training phase; above 1 a phase runs as a Kubeflow Trainer TrainJob (default: %(default)s)")
    group.add_argument("--train-cpu", help="training pod CPU, REQ or REQ:LIMIT (default: 8:16)")
    group.add_argument("--train-memory", help="training pod memory, REQ or REQ:LIMIT (default: 48Gi:64Gi)")
    group.add_argument("--step-cpu", help="CPU step pod CPU, REQ or REQ:LIMIT (default: 2:4)")
    group.add_argument("--step-memory", help="CPU step pod memory, REQ or REQ:LIMIT (default: 8Gi:16Gi)")
    group.add_argument("--node-selector", action="append", default=[], metavar="KEY=VALUE",
                       help="node label the GPU pool has (repeatable)")
    group.add_argument("--toleration", action="append", default=None, metavar="KEY[=VALUE][:EFFECT]",
                       help="taint the training pods tolerate (repeatable; default: nvidia.com/gpu:NoSchedule)")
    group.add_argument("--cpu-node-selector", action="append", default=[], metavar="KEY=VALUE",
                       help="node label for the CPU steps (repeatable)")
    group.add_argument("--cpu-toleration", action="append", default=[], metavar="KEY[=VALUE][:EFFECT]",
                       help="taint the CPU steps tolerate (repeatable)")
    group.add_argument("--s3-secret", default=defaults["s3_secret"].default,
                       help="Kubernetes secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; '' for none (default: %(default)s)")
    group.add_argument("--mlflow-secret", default=defaults["mlflow_secret"].default,
                       help="optional Kubernetes secret with MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN; '' for none (default: %(default)s)")
    group.add_argument("--image-pull-secret", action="append", default=[], metavar="NAME",
                       help="secret for pulling the images (repeatable)")
    group.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                       help="plain environment for every task, e.g. AWS_ENDPOINT_URL=http://minio:9000 (repeatable; never credentials)")
    group.add_argument("--training-retries", type=int, default=defaults["training_retry"].default.num_retries,
                       help="retries of a failed or preempted training task; it resumes from its last checkpoint (default: %(default)s)")
    group.add_argument("--retry-backoff", default=defaults["training_retry"].default.backoff_duration,
                       help="first wait before a training retry, doubling after each (default: %(default)s)")
    group.add_argument("--cache", action="append", default=[], metavar="KIND=on|off",
                       help=f"caching of the {' and '.join(CACHEABLE_KINDS)} tasks (content-keyed; default: on); training, evaluation and registration always run")
    group.add_argument("--shm-size", default=defaults["shm_size"].default,
                       help="size of /dev/shm in training pods (default: %(default)s)")
    group.add_argument("--training-timeout", type=int, default=0, metavar="SECONDS",
                       help="kill a training pod after this long (default: no limit)")


def cluster_settings_from_args(args: argparse.Namespace) -> ClusterSettings:
    """Build ClusterSettings from the flags `add_cluster_arguments` added."""
    base = ClusterSettings(cpu_image=images.cpu_image(args.cpu_image), gpu_image=images.gpu_image(args.gpu_image))

    def resources(default: Resources, cpu: str | None, memory: str | None) -> Resources:
        cpu_request, cpu_limit = _request_limit(cpu) if cpu else (default.cpu_request, default.cpu_limit)
        mem_request, mem_limit = _request_limit(memory) if memory else (default.memory_request, default.memory_limit)
        return Resources(cpu_request, cpu_limit, mem_request, mem_limit)

    caching = dict(DEFAULT_CACHING)
    for item in args.cache:
        kind, value = _key_value(item, "--cache")
        if kind not in TASK_KINDS:
            raise BertpipeError(f"--cache {item!r}: kinds are {', '.join(CACHEABLE_KINDS)}")
        if kind not in CACHEABLE_KINDS:
            raise BertpipeError(f"--cache {item!r}: only {' and '.join(CACHEABLE_KINDS)} tasks can be cached; {kind} tasks always run")
        caching[kind] = _on_off(value, f"--cache {kind}")
    tolerations = (base.gpu_tolerations if args.toleration is None
                   else tuple(Toleration.parse(spec) for spec in args.toleration))
    training_retry = Retry(args.training_retries, args.retry_backoff, base.training_retry.backoff_factor,
                           base.training_retry.backoff_max_duration)
    return ClusterSettings(
        cpu_image=base.cpu_image,
        gpu_image=base.gpu_image,
        gpu_type=args.gpu_type,
        gpus_per_node=args.gpus_per_node,
        training_resources=resources(base.training_resources, args.train_cpu, args.train_memory),
        cpu_step_resources=resources(base.cpu_step_resources, args.step_cpu, args.step_memory),
        gpu_node_selector=dict(_key_value(item, "--node-selector") for item in args.node_selector),
        gpu_tolerations=tolerations,
        cpu_node_selector=dict(_key_value(item, "--cpu-node-selector") for item in args.cpu_node_selector),
        cpu_tolerations=tuple(Toleration.parse(spec) for spec in args.cpu_toleration),
        s3_secret=args.s3_secret or None,
        mlflow_secret=args.mlflow_secret or None,
        image_pull_secrets=tuple(args.image_pull_secret),
        env=dict(_key_value(item, "--env") for item in args.env),
        training_retry=training_retry,
        cpu_step_retry=base.cpu_step_retry,
        caching=caching,
        shm_size=args.shm_size,
        training_timeout_seconds=args.training_timeout,
        num_nodes=args.num_nodes,
    )
