"""Cluster settings land in the compiled pipeline YAML, and nothing secret does."""

import argparse

import pytest
import yaml
from kfp import compiler, dsl

from components.core.errors import BertpipeError
from pipelines import images
from pipelines.kubernetes import (
    ClusterSettings,
    Resources,
    Retry,
    Toleration,
    add_cluster_arguments,
    apply_cpu_step_settings,
    apply_training_settings,
    cluster_settings_from_args,
)


@dsl.component(base_image=images.CPU_IMAGE, install_kfp_package=False)
def make_data(size: int) -> int:
    return size


@dsl.component(base_image=images.GPU_IMAGE, install_kfp_package=False)
def train(size: int) -> int:
    return size


def compile_with(settings: ClusterSettings, tmp_path) -> tuple[dict, dict, str]:
    """Compile a two-step pipeline (CPU data step -> training step); return its pipeline
    spec, its Kubernetes platform spec, and the raw text."""

    @dsl.pipeline(name="throwaway")
    def throwaway(size: int = 3):
        data = apply_cpu_step_settings(make_data(size=size), settings, kind="data")
        apply_training_settings(train(size=data.output), settings)

    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(throwaway, str(path))
    text = path.read_text()
    spec, platform = yaml.safe_load_all(text)
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"], text


def parse_flags(*flags: str) -> ClusterSettings:
    parser = argparse.ArgumentParser()
    add_cluster_arguments(parser)
    return cluster_settings_from_args(parser.parse_args(list(flags)))


@pytest.fixture
def compiled(tmp_path, monkeypatch):
    # Real-looking credentials in the compiling process's environment must not leak.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sEcReT-s3-value-123")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "sEcReT-mlflow-value-456")
    settings = parse_flags(
        "--cpu-image", "registry.example.com/ml/bertpipe-cpu:1.2",
        "--gpu-image", "registry.example.com/ml/bertpipe-cuda:1.2",
        "--gpu-type", "nvidia.com/gpu",
        "--gpus-per-node", "8",
        "--train-cpu", "48:64",
        "--train-memory", "400Gi",
        "--node-selector", "cloud.google.com/gke-accelerator=nvidia-h100-80gb",
        "--node-selector", "pool=train",
        "--toleration", "nvidia.com/gpu=present:NoSchedule",
        "--toleration", "cloud.google.com/gke-spot:NoExecute",
        "--cpu-node-selector", "pool=cpu",
        "--s3-secret", "team-s3",
        "--mlflow-secret", "team-mlflow",
        "--image-pull-secret", "regcred",
        "--env", "AWS_ENDPOINT_URL=http://minio.storage:9000",
        "--training-retries", "5",
        "--retry-backoff", "300s",
        "--cache", "vocab=off",
        "--shm-size", "32Gi",
        "--training-timeout", "86400",
    )
    return compile_with(settings, tmp_path)


def test_images_and_resources_land_on_each_executor(compiled):
    spec, _, _ = compiled
    data = spec["deploymentSpec"]["executors"]["exec-make-data"]["container"]
    training = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert data["image"] == "registry.example.com/ml/bertpipe-cpu:1.2"
    assert training["image"] == "registry.example.com/ml/bertpipe-cuda:1.2"
    assert training["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert training["resources"]["accelerator"]["resourceCount"] == "8"
    assert {k: v for k, v in training["resources"].items() if k.startswith("resource")} == {
        "resourceCpuRequest": "48", "resourceCpuLimit": "64",
        "resourceMemoryRequest": "400Gi", "resourceMemoryLimit": "400Gi",
    }
    assert "accelerator" not in data["resources"]
    assert data["resources"]["resourceCpuRequest"] == "2"
    assert data["resources"]["resourceMemoryLimit"] == "16Gi"
    for container in (data, training):
        assert {"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage:9000"} in container["env"]


def test_gpu_pool_placement_only_on_training(compiled):
    _, platform, _ = compiled
    training, data = platform["exec-train"], platform["exec-make-data"]
    assert training["nodeSelector"]["labels"] == {
        "cloud.google.com/gke-accelerator": "nvidia-h100-80gb", "pool": "train"}
    assert training["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},
        {"key": "cloud.google.com/gke-spot", "operator": "Exists", "effect": "NoExecute"},
    ]
    assert training["emptyDirMounts"] == [
        {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "32Gi"}]
    assert training["activeDeadlineSeconds"] == "86400"
    assert data["nodeSelector"]["labels"] == {"pool": "cpu"}
    assert "tolerations" not in data and "emptyDirMounts" not in data


def test_credentials_come_from_secrets_by_name_only(compiled):
    _, platform, text = compiled
    for executor in ("exec-train", "exec-make-data"):
        secrets = {s["secretName"]: s for s in platform[executor]["secretAsEnv"]}
        assert set(secrets) == {"team-s3", "team-mlflow"}
        s3 = secrets["team-s3"]
        assert {m["envVar"]: m["secretKey"] for m in s3["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
        assert s3["optional"] is False
        assert secrets["team-mlflow"]["optional"] is True
        assert platform[executor]["imagePullSecret"][0]["secretName"] == "regcred"
    assert "sEcReT" not in text


def test_retries_and_caching_per_task_kind(compiled):
    spec, _, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["train"]["retryPolicy"] == {
        "maxRetryCount": 5, "backoffDuration": "300s", "backoffFactor": 2.0, "backoffMaxDuration": "7200s"}
    assert tasks["make-data"]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["make-data"]["cachingOptions"] == {"enableCache": True}
    assert tasks["train"]["cachingOptions"].get("enableCache", False) is False


def test_defaults_cache_data_not_training_and_tolerate_gpu_taint(tmp_path, monkeypatch):
    monkeypatch.delenv(images.CPU_IMAGE_ENV, raising=False)
    monkeypatch.setenv(images.GPU_IMAGE_ENV, "my.registry:5000/bertpipe-cuda:dev")
    spec, platform, _ = compile_with(parse_flags(), tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["make-data"]["cachingOptions"] == {"enableCache": True}
    assert tasks["train"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 3
    assert platform["exec-train"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    executors = spec["deploymentSpec"]["executors"]
    assert executors["exec-train"]["container"]["image"] == "my.registry:5000/bertpipe-cuda:dev"
    assert executors["exec-make-data"]["container"]["image"] == images.default_image("cpu")
    assert executors["exec-train"]["container"]["resources"]["accelerator"]["resourceCount"] == "1"
    assert parse_flags().num_nodes == 1 and parse_flags("--num-nodes", "4").num_nodes == 4


def test_no_secrets_at_all_when_names_are_empty(tmp_path):
    _, platform, _ = compile_with(parse_flags("--s3-secret", "", "--mlflow-secret", ""), tmp_path)
    assert all("secretAsEnv" not in executor for executor in platform.values())


@pytest.mark.parametrize("spec, expected", [
    ("nvidia.com/gpu", Toleration("nvidia.com/gpu", "Exists")),
    ("nvidia.com/gpu:NoSchedule", Toleration("nvidia.com/gpu", "Exists", effect="NoSchedule")),
    ("dedicated=gpu", Toleration("dedicated", "Equal", "gpu")),
    ("dedicated=gpu:PreferNoSchedule", Toleration("dedicated", "Equal", "gpu", "PreferNoSchedule")),
])
def test_toleration_parse(spec, expected):
    assert Toleration.parse(spec) == expected


@pytest.mark.parametrize("flags, message", [
    (["--toleration", "dedicated=gpu:Sometimes"], "effect must be one of"),
    (["--toleration", "dedicated=gpu:"], "nothing after ':'"),
    (["--toleration", "=gpu"], "expected key"),
    (["--node-selector", "pool"], "expected KEY=VALUE"),
    (["--node-selector", "pool=a b"], "not a valid label value"),
    (["--gpus-per-node", "0"], "--gpus-per-node must be >= 1"),
    (["--num-nodes", "0"], "--num-nodes must be >= 1"),
    (["--train-memory", "64GB"], "give a memory size"),
    (["--train-cpu", "lots"], "give a CPU count"),
    (["--env", "AWS_SECRET_ACCESS_KEY=abc"], "looks like a credential"),
    (["--env", "MLFLOW_TRACKING_TOKEN=abc"], "looks like a credential"),
    (["--env", "DB_PASSWD=abc"], "looks like a credential"),
    (["--env", "HF_APIKEY=abc"], "looks like a credential"),
    (["--env", "MLFLOW_TRACKING_URI=http://user:pw@mlflow:5000"], "the URL carries a user name/password"),
    (["--s3-secret", "Team_S3"], "not a valid Kubernetes object name"),
    (["--cache", "data=maybe"], "is not on/off"),
    (["--cache", "training=on"], "training tasks always run"),
    (["--cache", "everything=on"], "kinds are"),
    (["--retry-backoff", "2m"], "whole seconds"),
    (["--gpu-image", "bertpipe cuda"], "not a container image reference"),
])
def test_bad_flags_are_user_errors(flags, message):
    with pytest.raises(BertpipeError, match=message):
        parse_flags(*flags)


def test_dataclasses_validate_direct_construction():
    with pytest.raises(BertpipeError, match="retries must be >= 0"):
        Retry(-1)
    with pytest.raises(BertpipeError, match="give a memory size"):
        Resources("1", "1", "1 Gi", "1Gi")
    with pytest.raises(BertpipeError, match="unknown task kinds"):
        ClusterSettings(caching={"train": False})
    with pytest.raises(BertpipeError, match="unknown task kind"):
        ClusterSettings().caches("train")


def test_plain_settings_that_merely_contain_token_are_accepted():
    assert parse_flags("--env", "TOKENIZERS_PARALLELISM=false", "--env", "AWS_ENDPOINT_URL=http://minio:9000").env == {
        "TOKENIZERS_PARALLELISM": "false", "AWS_ENDPOINT_URL": "http://minio:9000",
    }
