"""Multi-node TrainJob manifests (checked against the Trainer API schema) and the launcher
that creates one and waits, run against a local stand-in for the Kubernetes API."""

import dataclasses
import json
import re
import threading
from http.server import ThreadingHTTPServer

import pytest
from kubernetes import client as k8s_client

from components.core.errors import BertpipeError
from components.training.trainjob import instantiate, launch_phase, trainjob_name, trainjob_state, validate_trainjob
from pipelines.kubernetes import ClusterSettings, Resources, Toleration
from pipelines.trainjob import build_trainjob, trainjob_template
from tests.json_http import JsonHandler

SETTINGS = ClusterSettings(
    cpu_image="registry.example.com/bertpipe-cpu:1",
    gpu_image="registry.example.com/bertpipe-cuda:1",
    gpus_per_node=8,
    training_resources=Resources("48", "64", "400Gi", "400Gi"),
    gpu_node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
    gpu_tolerations=(Toleration.parse("nvidia.com/gpu=present:NoSchedule"),),
    image_pull_secrets=("regcred",),
    env={"AWS_ENDPOINT_URL": "http://minio.storage:9000"},
    shm_size="64Gi",
    training_timeout_seconds=172800,
)


def manifest(**overrides):
    args = dict(name="bertpipe-phase1-0123456789", train_args=["train", "--max-seq-length", "128"],
                settings=SETTINGS, num_nodes=4, namespace="ml")
    return build_trainjob(**{**args, **overrides})


def test_trainer_runs_torchrun_on_n_nodes_by_m_gpus_from_the_cuda_image():
    trainer = manifest()["spec"]["trainer"]
    assert trainer["image"] == "registry.example.com/bertpipe-cuda:1"
    assert trainer["command"] == ["torchrun", "--no-python", "bertpipe", "train", "--max-seq-length", "128"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (4, 8)
    assert trainer["resourcesPerNode"] == {
        "requests": {"cpu": "48", "memory": "400Gi", "nvidia.com/gpu": "8"},
        "limits": {"cpu": "64", "memory": "400Gi", "nvidia.com/gpu": "8"},
    }


def test_secrets_by_reference_and_pool_placement_patched_into_the_runtime():
    job = manifest()
    env = {e["name"]: e for e in job["spec"]["trainer"]["env"]}
    assert env["AWS_ENDPOINT_URL"] == {"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage:9000"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "bertpipe-s3", "key": "AWS_SECRET_ACCESS_KEY"}}
    assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert all("value" not in e for name, e in env.items() if name != "AWS_ENDPOINT_URL")
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert patch["name"] == "node"
    pod = patch["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                   "effect": "NoSchedule"}]
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}}]
    assert pod["containers"] == [{"name": "node", "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}]}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert job["spec"]["activeDeadlineSeconds"] == 172800
    assert job["spec"]["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                         "kind": "ClusterTrainingRuntime"}


def test_names_are_stable_per_output_phase_and_attempt_and_valid_labels():
    output = "s3://bucket/runs/3f0c9a1e-7d2b-4c55-9e1a-aa00ff11ee22/phase-128"
    name = trainjob_name(output, "Phase 1 (seq 128)", 1)
    assert name == trainjob_name(output, "Phase 1 (seq 128)", 1)
    assert name != trainjob_name("s3://bucket/runs/another-run/phase-128", "Phase 1 (seq 128)", 1)
    assert trainjob_name(output, "Phase 1 (seq 128)", 2) == name[:-1] + "2"
    assert re.fullmatch(r"bertpipe-phase-1-seq-128-[0-9a-f]{10}-1", name)
    manifest(name=name)  # accepted


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m["spec"]["trainer"].update(numNodes="4"), "TrainerV1alpha1Trainer.numNodes: Input should be a valid integer"),
    (lambda m: m["spec"]["trainer"].update(replicas=4), "spec.trainer.replicas does not match the Trainer schema"),
    (lambda m: m["spec"]["runtimeRef"].pop("name"), "TrainerV1alpha1RuntimeRef.name: Input should be a valid string"),
    (lambda m: m["spec"]["runtimePatches"][0].pop("manager"), "TrainerV1alpha1RuntimePatch.manager: Input should be a valid string"),
    (lambda m: m["spec"]["trainer"]["env"].append({"value": "x"}), "spec.trainer.env[6].name does not match"),
    (lambda m: m["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
     ["template"]["spec"]["template"]["spec"].update(hostNetwork=True), "template.spec.hostNetwork does not match"),
    (lambda m: m.update(kind="PyTorchJob"), "not a trainer.kubeflow.org/v1alpha1 TrainJob"),
])
def test_schema_violations_are_caught(mutate, message):
    job = manifest()
    mutate(job)
    with pytest.raises(BertpipeError, match=re.escape(message)):
        validate_trainjob(job)


def test_compile_time_template_gets_run_time_name_and_arguments():
    template = manifest(name="placeholder", train_args=[])
    job = instantiate(template, name="bertpipe-phase1-abc", train_args=["train", "--data", "s3://b/run-7/data-128"])
    assert job["metadata"]["name"] == "bertpipe-phase1-abc"
    assert job["spec"]["trainer"]["command"][3:] == ["train", "--data", "s3://b/run-7/data-128"]
    assert template["metadata"]["name"] == "placeholder", "the template is not modified"
    assert job["spec"]["trainer"]["numNodes"] == 4
    with pytest.raises(BertpipeError, match="lowercase DNS label"):
        instantiate(template, name="", train_args=[])


def test_bad_arguments_are_user_errors():
    with pytest.raises(BertpipeError, match="--num-nodes must be >= 1"):
        manifest(num_nodes=0)
    with pytest.raises(BertpipeError, match="lowercase DNS label"):
        manifest(name="Phase_1")


# --- the launcher against a stand-in Kubernetes API ---------------------------------------------


class FakeKubernetes(ThreadingHTTPServer):
    """Serves trainer.kubeflow.org trainjobs: create (409 if it exists), get (404 if not). Each
    created job reports Running for `running_polls` reads, then the next of `outcomes`
    (Complete or Failed; the last one repeats)."""

    def __init__(self, running_polls=2, outcomes=("Complete",), create_status=None):
        super().__init__(("127.0.0.1", 0), FakeKubernetesHandler)
        self.objects, self.requests = {}, []
        self.running_polls, self.outcomes, self.create_status = running_polls, list(outcomes), create_status

    @property
    def api_client(self):
        configuration = k8s_client.Configuration()
        configuration.host = f"http://127.0.0.1:{self.server_address[1]}"
        return k8s_client.ApiClient(configuration)

    def names(self) -> list[str]:
        return [name for _, name in self.objects]


class FakeKubernetesHandler(JsonHandler):
    server: FakeKubernetes
    PATH = re.compile(r"/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/([^/]+)/trainjobs(?:/([^/]+))?")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        namespace, _ = self.PATH.fullmatch(self.path).groups()
        self.server.requests.append(("POST", self.path, body))
        if self.server.create_status:
            return self._reply(self.server.create_status, {"kind": "Status", "message": "forbidden"})
        key = (namespace, body["metadata"]["name"])
        if key in self.server.objects:
            return self._reply(409, {"kind": "Status", "reason": "AlreadyExists"})
        validate_trainjob(body)
        outcomes = self.server.outcomes
        final = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        self.server.objects[key] = {**body, "status": {}, "reads": 0, "final": final}
        self._reply(201, body)

    def do_GET(self):
        namespace, name = self.PATH.fullmatch(self.path).groups()
        self.server.requests.append(("GET", self.path, None))
        stored = self.server.objects.get((namespace, name))
        if stored is None:
            return self._reply(404, {"kind": "Status", "reason": "NotFound"})
        stored["reads"] += 1
        if stored["reads"] > self.server.running_polls:
            final = stored["final"]
            stored["status"] = {"conditions": [{"type": final, "status": "True", "reason": "JobFailed" if final == "Failed" else "Done",
                                                "message": "node-2 exited with code 1"}]}
        self._reply(200, {k: v for k, v in stored.items() if k not in ("reads", "final")})


@pytest.fixture
def fake_k8s_factory():
    servers = []

    def start(**kwargs):
        server = FakeKubernetes(**kwargs)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


TEMPLATE = trainjob_template(dataclasses.replace(SETTINGS, num_nodes=2))
OUTPUT = "s3://bucket/runs/run-42/phase-128"
RANK_ARGS = ["train-phase", "--output-uri", OUTPUT, "--seed", "7"]


def launch(server, **overrides):
    arguments = dict(output_uri=OUTPUT, phase="phase-128", train_args=RANK_ARGS, namespace="ml", poll_seconds=0.01, api_client=server.api_client)
    return launch_phase(TEMPLATE, **{**arguments, **overrides})


def test_launcher_creates_this_phases_job_from_the_template_then_waits(fake_k8s_factory):
    server = fake_k8s_factory(running_polls=2)
    final = launch(server)
    assert trainjob_state(final) == "Complete"
    assert [method for method, _, _ in server.requests] == ["GET", "POST", "GET", "GET", "GET"]  # no attempt yet, create, 3 polls
    created = server.requests[1][2]
    assert server.requests[1][1] == "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"
    assert created["metadata"] == {"name": trainjob_name(OUTPUT, "phase-128", 1), "namespace": "ml",
                                   "labels": {"app.kubernetes.io/part-of": "bertpipe"}}
    assert created["spec"]["trainer"]["numNodes"] == 2
    assert created["spec"]["trainer"]["command"] == ["torchrun", "--no-python", "bertpipe", *RANK_ARGS]


def test_a_retried_launcher_adopts_a_running_or_complete_attempt(fake_k8s_factory):
    server = fake_k8s_factory(running_polls=0)
    launch(server)
    launch(server)  # finds attempt 1 Complete: waits on it, creates nothing
    assert server.names() == [trainjob_name(OUTPUT, "phase-128", 1)]
    assert [m for m, _, _ in server.requests].count("POST") == 1


def test_after_a_failed_attempt_the_retry_starts_a_new_one(fake_k8s_factory):
    """The job fails once: the launcher fails with its reason, KFP retries the launcher, which starts
    attempt 2 with the same rank command (whose ranks resume from the newest checkpoint in OUTPUT)."""
    server = fake_k8s_factory(running_polls=1, outcomes=("Failed", "Complete"))
    with pytest.raises(BertpipeError, match=r"TrainJob ml/bertpipe-phase-128-[0-9a-f]{10}-1 failed: JobFailed: node-2 exited with code 1; "
                                            "a retry of this task starts a new attempt"):
        launch(server)
    final = launch(server)
    assert trainjob_state(final) == "Complete"
    assert server.names() == [trainjob_name(OUTPUT, "phase-128", 1), trainjob_name(OUTPUT, "phase-128", 2)]
    first, second = (body for method, _, body in server.requests if method == "POST")
    assert first["spec"] == second["spec"]
    assert launch(server)["metadata"]["name"] == trainjob_name(OUTPUT, "phase-128", 2), "a third launcher adopts the complete attempt 2"


def test_timeout_and_forbidden_are_user_errors(fake_k8s_factory):
    slow = fake_k8s_factory(running_polls=10**6)
    with pytest.raises(BertpipeError, match="still running after 0s"):
        launch(slow, timeout_seconds=0.05)
    forbidden = fake_k8s_factory(create_status=403)
    with pytest.raises(BertpipeError, match="403.*may this service account create trainjobs"):
        launch(forbidden)


def test_outside_a_cluster_the_kube_config_gives_server_and_namespace(fake_k8s_factory, tmp_path, monkeypatch):
    from kubernetes.config import kube_config

    server = fake_k8s_factory(running_polls=0)
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "me", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "me", "namespace": "team-a"}}],
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "kubeconfig"))
    launch_phase(TEMPLATE, output_uri=OUTPUT, phase="phase-128", train_args=RANK_ARGS, poll_seconds=0.01)
    assert list(server.objects) == [("team-a", trainjob_name(OUTPUT, "phase-128", 1))]
