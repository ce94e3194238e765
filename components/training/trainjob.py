"""Running a multi-node phase as a Kubeflow Trainer TrainJob: fill in the compiled template, create it, wait.

The template (pipelines.trainjob, at compile time) holds the image, GPUs, pool and secrets; at
run time the launcher adds this phase's name and rank command line. Attempts are numbered:
a retried launcher adopts an attempt that is still running or complete, and starts the next
attempt after a failed one, whose ranks resume from the newest checkpoint in output_uri.
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

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
API_VERSION = f"{GROUP}/{VERSION}"
# torchrun reads --nnodes, --nproc-per-node, --node-rank and the rendezvous address from the
# PET_* variables the torch runtime sets; --no-python runs the console script directly.
TORCHRUN = ("torchrun", "--no-python", "bertpipe")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def trainjob_name(output_uri: str, phase: str, attempt: int) -> str:
    """``bertpipe-<phase>-<10 hex of the output folder>-<attempt>``: the output folder names the run and
    phase; short enough for the JobSet and pod names the operator derives from it."""
    slug = re.sub(r"[^a-z0-9]+", "-", phase.lower()).strip("-")[:20] or "phase"
    digest = hashlib.sha256(output_uri.encode()).hexdigest()[:10]
    return f"bertpipe-{slug}-{digest}-{attempt}"


def check_name(name: str) -> None:
    if not _NAME.match(name) or len(name) > 63:
        raise BertpipeError(f"TrainJob name {name!r} must be a lowercase DNS label of at most 63 characters")


def instantiate(template: dict[str, Any], *, name: str, train_args: Sequence[str]) -> dict[str, Any]:
    """The compile-time template with this phase's name and rank arguments, which only exist at run time."""
    check_name(name)
    manifest = copy.deepcopy(template)
    manifest["metadata"]["name"] = name
    manifest["spec"]["trainer"]["command"] = [*TORCHRUN, *train_args]
    validate_trainjob(manifest)
    return manifest


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


def _default_namespace() -> str:
    """The pod's own namespace inside a cluster, else the kube config's current context's."""
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    from kubernetes import config

    try:
        _, active = config.list_kube_config_contexts()
    except (config.ConfigException, OSError) as error:
        raise BertpipeError(f"no namespace for the TrainJob: run inside the cluster or set a kube config context ({error})") from None
    return active["context"].get("namespace") or "default"


class _Api:
    """The trainjobs of one namespace, with Kubernetes errors turned into one-line BertpipeErrors."""

    def __init__(self, namespace: str, api_client=None):
        from kubernetes import client

        self.namespace = namespace
        self.objects = client.CustomObjectsApi(api_client or _api_client())

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.objects.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise BertpipeError(f"reading TrainJob {self.namespace}/{name} failed: {error.status} {error.reason}") from None

    def create(self, manifest: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        name = manifest["metadata"]["name"]
        try:
            self.objects.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, manifest)
        except ApiException as error:
            if error.status != 409:
                raise BertpipeError(f"creating TrainJob {self.namespace}/{name} failed: {error.status} {error.reason}; "
                                    "is Kubeflow Trainer installed, and may this service account create trainjobs?") from None
            log.info("TrainJob %s/%s already exists: waiting for it", self.namespace, name)
            return
        log.info("created TrainJob %s/%s (%d nodes)", self.namespace, name, manifest["spec"]["trainer"]["numNodes"])


def _latest_attempt(api: _Api, output_uri: str, phase: str) -> tuple[int, dict[str, Any] | None]:
    """The number and object of the newest attempt of this phase (0, None: none yet)."""
    attempt, latest = 0, None
    while (found := api.get(trainjob_name(output_uri, phase, attempt + 1))) is not None:
        attempt, latest = attempt + 1, found
    return attempt, latest


def launch_phase(template_json: str, *, output_uri: str, phase: str, train_args: Sequence[str], namespace: str | None = None,
                 poll_seconds: float = 30.0, timeout_seconds: float = 0, api_client=None) -> dict[str, Any]:
    """Run the phase as a TrainJob from the compiled template and wait for it; returns its final object.

    A Running or Complete attempt of the same phase (a retried launcher) is adopted; after a
    Failed one, the next attempt starts and its ranks resume from the newest checkpoint."""
    template = json.loads(template_json)
    namespace = namespace or template["metadata"].get("namespace") or _default_namespace()
    api = _Api(namespace, api_client)
    attempt, previous = _latest_attempt(api, output_uri, phase)
    if previous is not None and trainjob_state(previous) != "Failed":
        name = previous["metadata"]["name"]
        log.info("TrainJob %s/%s of an earlier launcher is %s: waiting for it", namespace, name, trainjob_state(previous))
    else:
        if previous is not None:
            log.warning("TrainJob attempt %d failed (%s); starting attempt %d, which resumes from the newest checkpoint in %s",
                        attempt, _failure_message(previous), attempt + 1, output_uri)
        name = trainjob_name(output_uri, phase, attempt + 1)
        manifest = instantiate(template, name=name, train_args=train_args)
        manifest["metadata"]["namespace"] = namespace
        api.create(manifest)
    return _wait(api, name, poll_seconds, timeout_seconds)


def _wait(api: _Api, name: str, poll_seconds: float, timeout_seconds: float) -> dict[str, Any]:
    started = time.monotonic()
    where = f"{api.namespace}/{name}"
    while True:
        current = api.get(name)
        if current is None:
            raise BertpipeError(f"TrainJob {where} disappeared while the launcher waited for it (deleted?)")
        state = trainjob_state(current)
        if state == "Complete":
            log.info("TrainJob %s completed", where)
            return current
        if state == "Failed":
            raise BertpipeError(f"TrainJob {where} failed: {_failure_message(current)}; a retry of this task starts a new attempt "
                                "that resumes from the newest checkpoint")
        if timeout_seconds and time.monotonic() - started > timeout_seconds:
            raise BertpipeError(f"TrainJob {where} still running after {timeout_seconds:.0f}s; "
                                "it keeps running: `kubectl get trainjob` it, or delete it")
        time.sleep(poll_seconds)
