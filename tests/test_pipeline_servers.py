"""The whole pipeline once against real servers: artifacts in SeaweedFS (s3://), tracking and registry in an
MLflow server, each task run as a pod would run it (tests/pod_like.py)."""

import mlflow

from components.core import storage
from pipelines.local_run import run_pipeline_locally
from tests.pod_like import pod_like_tasks
from tests.test_pipeline_local import TINY


def test_pipeline_writes_to_s3_and_logs_to_the_mlflow_server(servers_env, tmp_path, monkeypatch):
    root = f"s3://{servers_env.bucket}/e2e"
    # A 20-step model does not beat the trivial baselines; this test is about where things go, so it skips that rule.
    arguments = {**TINY, "promotion_over_baseline": False, "artifact_root": root, "tracking_uri": servers_env.tracking_uri, "experiment": "servers-e2e", "registered_model_name": "servers-e2e"}
    # What a compiled pipeline gives a pod: --env values and the S3 secret's keys, nothing of this shell.
    tasks = pod_like_tasks(monkeypatch, tmp_path / "pods", servers_env.env)
    outputs = run_pipeline_locally(arguments, str(tmp_path / "kfp-root"))

    assert tasks.return_codes and set(tasks.return_codes) == {0}
    assert max(tasks.executor_input_bytes) < 128 * 1024

    assert outputs["model_version"] == "servers-e2e/1"
    run_folder = outputs["model_uri"].rsplit("/phase-512/", 1)[0]
    assert run_folder.startswith(f"{root}/runs/")
    files = storage.list_files(run_folder)
    cached = storage.list_files(f"{root}/cache")  # vocab and data: content-keyed, beside the runs
    assert any(f.startswith(f"{root}/cache/vocab-") and f.endswith("/vocab.txt") for f in cached)
    for length in (128, 512):
        (data_folder,) = {f.rsplit("/", 1)[0] for f in cached if f.startswith(f"{root}/cache/data-{length}-") and f.endswith("/manifest.json")}
        assert any(f.startswith(f"{data_folder}/train/shard-") for f in cached)
        assert any(f.startswith(f"{run_folder}/phase-{length}/checkpoints/") for f in files)
        assert f"{run_folder}/phase-{length}/model/model.safetensors" in files
    assert f"{run_folder}/report.md" in files

    client = mlflow.MlflowClient(servers_env.tracking_uri)
    experiment = client.get_experiment_by_name("servers-e2e")
    runs = client.search_runs([experiment.experiment_id])
    steps = {r.data.tags.get("bertpipe.step") for r in runs}
    assert {"export-vocab", "create-pretraining-data", "evaluate"} <= steps
    assert any("loss" in r.data.metrics for r in runs)
    assert str(client.get_model_version_by_alias("servers-e2e", "champion").version) == "1"
    # The model's files live in the bucket, behind the MLflow server's artifact proxy.
    assert any(key.endswith("model.safetensors") for key in storage.list_files(f"s3://{servers_env.bucket}/mlflow"))
