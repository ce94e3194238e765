"""The whole pipeline through kfp.local on tiny settings, twice, as `bertpipe run` runs it."""

import json

import mlflow
import pytest

from pipelines.local_run import DEMO_SETTINGS, run_pipeline_locally

TINY = {
    **DEMO_SETTINGS,
    "vocab_size": 1500,
    "dupe_factor": 1,
    "phase1_steps": 20,
    "phase1_batch_size": 8,
    "phase2_steps": 2,
    "phase2_batch_size": 4,
}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    arguments = {
        **TINY,
        "artifact_root": str(root / "artifacts"),
        "tracking_uri": f"sqlite:///{root}/mlflow.db",
        "experiment": "pipeline-test",
        "registered_model_name": "pipeline-test",
    }
    first = run_pipeline_locally(arguments, str(root / "kfp-root"))
    second = run_pipeline_locally(arguments, str(root / "kfp-root"))
    return arguments, first, second, root


def test_runs_register_successive_versions_without_touching_each_other(two_runs):
    _, first, second, root = two_runs
    assert first["model_version"] == "pipeline-test/1"
    assert second["model_version"] == "pipeline-test/2"
    assert first["model_uri"] != second["model_uri"]
    assert len(list((root / "artifacts" / "runs").iterdir())) == 2


def test_same_settings_give_the_same_metrics(two_runs):
    _, first, second, _ = two_runs
    assert first["metrics"] == second["metrics"]
    assert set(first["metrics"]) >= {"mlm_accuracy_128", "perplexity_512", "nsp_accuracy_512"}


def test_mlflow_holds_the_run_params_metrics_and_model(two_runs):
    arguments, first, _, _ = two_runs
    client = mlflow.MlflowClient(arguments["tracking_uri"])
    experiment = client.get_experiment_by_name("pipeline-test")
    runs = client.search_runs([experiment.experiment_id])
    steps = sorted(r.data.tags.get("bertpipe.step", "") for r in runs if r.data.tags.get("mlflow.parentRunId"))
    assert steps.count("export-vocab") == 2
    train_runs = [r for r in runs if "learning_rate" in r.data.params]
    assert len(train_runs) == 4 and all("loss" in r.data.metrics for r in train_runs)
    # Phase 1 logged every 10 of its 20 steps.
    histories = sorted(len(client.get_metric_history(run.info.run_id, "loss")) for run in train_runs)
    assert histories[-1] == 2


def test_registered_version_fills_a_mask(two_runs):
    arguments, first, _, _ = two_runs
    mlflow.set_tracking_uri(arguments["tracking_uri"])
    fill_mask = mlflow.transformers.load_model(f"models:/{first['model_version']}")
    predictions = fill_mask("the king [MASK] the queen .")
    assert len(predictions) == 5
    assert all(isinstance(p["token_str"], str) and 0.0 <= p["score"] <= 1.0 for p in predictions)
    assert json.dumps(predictions)  # plain data, servable as JSON
