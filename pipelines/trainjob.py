"""Multi-node training: one phase as a Kubeflow Trainer TrainJob (N nodes x M GPUs).

A KFP task is one pod, so a phase that needs several nodes is handed to the Trainer
operator: `build_trainjob` writes the TrainJob (same CUDA image, same `bertpipe` entry
point started by torchrun, same GPU pool, secrets and /dev/shm as a single-pod phase) and
checks it against the Trainer API schema; `run_trainjob` creates it from a small launcher
task and waits for it. The TrainJob name is derived from the pipeline run and phase, so a
retried launcher finds the job it already created instead of starting a second one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.core.errors import BertpipeError
from pipelines.kubernetes import MLFLOW_SECRET_KEYS, S3_SECRET_KEYS, ClusterSettings

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_RUNTIME = "torch-distributed"  # the ClusterTrainingRuntime Kubeflow Trainer installs
NODE = "node"  # replicated job and container name in the torch runtimes
PATCH_MANAGER = "bertpipe.dev/pipeline"
# torchrun reads --nnodes, --nproc-per-node, --node-rank and the rendezvous address from the
# PET_* variables the torch runtime sets; --no-python runs the console script directly.
TORCHRUN = ("torchrun", "--no-python", "bertpipe")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def trainjob_name(pipeline_run_id: str, phase: str) -> str:
    """``bertpipe-<phase>-<10 hex of the run id>``: stable across launcher retries, short
    enough for the JobSet and pod names the operator derives from it."""
    slug = re.sub(r"[^a-z0-9]+", "-", phase.lower()).strip("-")[:20] or "phase"
    digest = hashlib.sha256(pipeline_run_id.encode()).hexdigest()[:10]
    return f"bertpipe-{slug}-{digest}"


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
    if not _NAME.match(name) or len(name) > 63:
        raise BertpipeError(f"TrainJob name {name!r} must be a lowercase DNS label of at most 63 characters")
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


def instantiate(template: dict[str, Any], *, name: str, train_args: Sequence[str]) -> dict[str, Any]:
    """The compile-time template (from `build_trainjob`) with this run's name and training
    arguments, which only exist at run time (input URIs, the pipeline run id)."""
    if not _NAME.match(name) or len(name) > 63:
        raise BertpipeError(f"TrainJob name {name!r} must be a lowercase DNS label of at most 63 characters")
    manifest = copy.deepcopy(template)
    manifest["metadata"]["name"] = name
    manifest["spec"]["trainer"]["command"] = [*TORCHRUN, *train_args]
    validate_trainjob(manifest)
    return manifest


def trainjob_template(settings: ClusterSettings, runtime: str = DEFAULT_RUNTIME) -> str:
    """JSON of the TrainJob for ``settings.num_nodes`` nodes, built and checked at compile
    time; `launch_phase` fills in the run's name and arguments."""
    return json.dumps(build_trainjob(name="bertpipe-template", train_args=[], settings=settings,
                                     num_nodes=settings.num_nodes, runtime=runtime))


def launch_phase(template_json: str, *, pipeline_run_id: str, phase: str, train_args: Sequence[str],
                 namespace: str | None = None, poll_seconds: float = 30.0, timeout_seconds: float = 0,
                 api_client=None) -> dict[str, Any]:
    """What the multi-node launcher component runs: this run's TrainJob for ``phase``,
    created (or adopted after a retry) in ``namespace`` (default: the pod's own), waited for."""
    manifest = instantiate(json.loads(template_json), name=trainjob_name(pipeline_run_id, phase),
                           train_args=train_args)
    if namespace:
        manifest["metadata"]["namespace"] = namespace
    return run_trainjob(manifest, poll_seconds=poll_seconds, timeout_seconds=timeout_seconds, api_client=api_client)


def _first_difference(expected: Any, actual: Any, path: str = "") -> str | None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected.keys() | actual.keys():  # dropped: unknown; added: a required field defaulted
            if key not in actual or key not in expected:
                return f"{path}.{key}"
            found = _first_difference(expected[key], actual[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for i, (a, b) in enumerate(zip(expected, actual)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if expected == actual else path or "."


def validate_trainjob(manifest: dict[str, Any]) -> None:
    """Check a manifest against the TrainJob API models (kubeflow-trainer-api, generated
    from the Trainer CRDs' OpenAPI schema): types, required fields, and no field the
    schema does not know. The models drop unknown fields and fill some required ones with
    defaults, so the manifest must also survive a round trip through them unchanged."""
    import pydantic
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    if manifest.get("apiVersion") != API_VERSION or manifest.get("kind") != KIND:
        raise BertpipeError(f"not a {API_VERSION} {KIND}: {manifest.get('apiVersion')} {manifest.get('kind')}")
    try:
        parsed = TrainerV1alpha1TrainJob.from_dict(manifest)
    except pydantic.ValidationError as error:  # raised per nested model: name it with its field
        problem = error.errors()[0]
        where = ".".join([error.title, *(str(part) for part in problem["loc"])])
        raise BertpipeError(f"TrainJob does not match the Trainer schema at {where}: {problem['msg']}") from None
    lost = _first_difference(manifest, parsed.to_dict())
    if lost:
        raise BertpipeError(f"TrainJob field {lost.lstrip('.')} does not match the Trainer schema "
                            "(unknown, missing though required, or of the wrong type)")


# --- creating and waiting ---------------------------------------------------------------------


def _namespace(manifest: dict[str, Any]) -> str:
    namespace = manifest["metadata"].get("namespace")
    if namespace:
        return namespace
    if SERVICE_ACCOUNT_NAMESPACE.exists():  # inside a KFP pod: its own namespace
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    raise BertpipeError("no namespace for the TrainJob: pass namespace= or run inside the cluster")


def _api_client():
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as error:
            raise BertpipeError(f"no Kubernetes credentials (in-cluster or kube config): {error}") from None
    return client.ApiClient()


def trainjob_state(trainjob: dict[str, Any]) -> str:
    """Complete, Failed or Running, from the TrainJob's status conditions."""
    for condition in trainjob.get("status", {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return condition["type"]
    return "Running"


def _failure_message(trainjob: dict[str, Any]) -> str:
    for condition in trainjob.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Failed":
            return f"{condition.get('reason', '')}: {condition.get('message', '')}".strip(": ")
    return "no reason given"


def run_trainjob(
    manifest: dict[str, Any],
    *,
    poll_seconds: float = 30.0,
    timeout_seconds: float = 0,
    api_client=None,
) -> dict[str, Any]:
    """Create the TrainJob (or adopt the one a previous attempt created) and wait until
    it completes; return its final object, raise BertpipeError when it fails or times out."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    validate_trainjob(manifest)
    manifest = copy.deepcopy(manifest)
    namespace, name = _namespace(manifest), manifest["metadata"]["name"]
    manifest["metadata"]["namespace"] = namespace
    api = client.CustomObjectsApi(api_client or _api_client())
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
        logger.info("created TrainJob %s/%s (%d nodes)", namespace, name, manifest["spec"]["trainer"]["numNodes"])
    except ApiException as error:
        if error.status != 409:
            raise BertpipeError(f"creating TrainJob {namespace}/{name} failed: {error.status} {error.reason}; "
                                "is Kubeflow Trainer installed, and may this service account create trainjobs?") from None
        logger.info("TrainJob %s/%s already exists (launcher retry): waiting for it", namespace, name)
    started = time.monotonic()
    while True:
        try:
            current = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as error:
            raise BertpipeError(f"reading TrainJob {namespace}/{name} failed: {error.status} {error.reason}") from None
        state = trainjob_state(current)
        if state == "Complete":
            logger.info("TrainJob %s/%s completed", namespace, name)
            return current
        if state == "Failed":
            raise BertpipeError(f"TrainJob {namespace}/{name} failed: {_failure_message(current)}")
        if timeout_seconds and time.monotonic() - started > timeout_seconds:
            raise BertpipeError(f"TrainJob {namespace}/{name} still running after {timeout_seconds:.0f}s; "
                                "it keeps running: `kubectl get trainjob` it, or delete it")
        time.sleep(poll_seconds)
