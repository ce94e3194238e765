"""Multi-node training at compile time: the TrainJob template of a phase (N nodes x M GPUs).

A KFP task is one pod, so a phase that needs several nodes is handed to the Trainer
operator: `build_trainjob` writes the TrainJob (same CUDA image, same `bertpipe` entry
point started by torchrun, same GPU pool, secrets and /dev/shm as a single-pod phase) and
checks it against the Trainer API schema. The launcher task fills in the run-time name and
arguments and waits (components.training.trainjob).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from components.core.errors import BertpipeError
from components.training.trainjob import API_VERSION, GROUP, KIND, TORCHRUN, check_name, validate_trainjob
from pipelines.kubernetes import MLFLOW_SECRET_KEYS, S3_SECRET_KEYS, ClusterSettings

DEFAULT_RUNTIME = "torch-distributed"  # the ClusterTrainingRuntime Kubeflow Trainer installs
NODE = "node"  # replicated job and container name in the torch runtimes
PATCH_MANAGER = "bertpipe.dev/pipeline"


def _secret_env(secret: str, key_to_env: dict[str, str], optional: bool) -> list[dict[str, Any]]:
    ref = {"name": secret, "optional": True} if optional else {"name": secret}
    return [{"name": env, "valueFrom": {"secretKeyRef": {**ref, "key": key}}} for key, env in key_to_env.items()]


def _environment(settings: ClusterSettings) -> list[dict[str, Any]]:
    env = [{"name": name, "value": value} for name, value in settings.env.items()]
    if settings.s3_secret:
        env += _secret_env(settings.s3_secret, S3_SECRET_KEYS, optional=False)
    if settings.mlflow_secret:
        env += _secret_env(settings.mlflow_secret, MLFLOW_SECRET_KEYS, optional=True)
    return env


def _pod_patch(settings: ClusterSettings) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}}],
        "containers": [{"name": NODE, "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}],
    }
    if settings.gpu_node_selector:
        pod["nodeSelector"] = dict(settings.gpu_node_selector)
    if settings.gpu_tolerations:
        pod["tolerations"] = [
            {k: v for k, v in (("key", t.key), ("operator", t.operator), ("value", t.value), ("effect", t.effect))
             if v is not None}
            for t in settings.gpu_tolerations
        ]
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    return pod


def build_trainjob(
    *,
    name: str,
    train_args: Sequence[str],
    settings: ClusterSettings,
    num_nodes: int,
    namespace: str | None = None,
    runtime: str = DEFAULT_RUNTIME,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A validated TrainJob manifest running ``torchrun bertpipe <train_args>`` on
    ``num_nodes`` nodes with ``settings.gpus_per_node`` processes (one per GPU) each."""
    if num_nodes < 1:
        raise BertpipeError(f"--num-nodes must be >= 1, not {num_nodes}")
    check_name(name)
    resources = settings.training_resources
    gpus = str(settings.gpus_per_node)
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "bertpipe", **(labels or {})}}
    if namespace:
        metadata["namespace"] = namespace
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "runtimeRef": {"name": runtime, "apiGroup": GROUP, "kind": "ClusterTrainingRuntime"},
            "trainer": {
                "image": settings.gpu_image,
                "command": [*TORCHRUN, *train_args],
                "numNodes": num_nodes,
                "numProcPerNode": settings.gpus_per_node,
                "resourcesPerNode": {
                    "requests": {"cpu": resources.cpu_request, "memory": resources.memory_request,
                                 settings.gpu_type: gpus},
                    "limits": {"cpu": resources.cpu_limit, "memory": resources.memory_limit, settings.gpu_type: gpus},
                },
                "env": _environment(settings),
            },
            "runtimePatches": [{
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                    "name": NODE,
                    "template": {"spec": {"template": {"spec": _pod_patch(settings)}}},
                }]}}},
            }],
        },
    }
    if settings.training_timeout_seconds:
        manifest["spec"]["activeDeadlineSeconds"] = settings.training_timeout_seconds
    validate_trainjob(manifest)
    return manifest


def trainjob_template(settings: ClusterSettings, runtime: str = DEFAULT_RUNTIME) -> str:
    """JSON of the TrainJob for ``settings.num_nodes`` nodes, built and checked at compile
    time; the launcher fills in the run's name and arguments."""
    return json.dumps(build_trainjob(name="bertpipe-template", train_args=[], settings=settings,
                                     num_nodes=settings.num_nodes, runtime=runtime))
