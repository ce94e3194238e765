"""The whole pipeline through kfp.local on tiny settings, twice, as `bertpipe run` runs it."""

import io
import json
import re
from pathlib import Path

import mlflow
import pytest

from components.core.baselines import BASELINE_OF
from components.evaluation.fill_mask import fill_mask
from pipelines.local_run import DEMO_SETTINGS, reuse_lines, run_pipeline_locally

# The demo's settings with a tiny model from scratch on a trained vocab: the demo's MiniLM checkpoint would
# triple this test's time (tests/test_demo_checkpoint.py loads it; test_training_integration continues from it).
TINY = {
    **DEMO_SETTINGS,
    "vocab_source": "",
    "init_checkpoint": "",
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
    screen = io.StringIO()
    first = run_pipeline_locally(arguments, str(root / "kfp-root"), stream=screen)
    first["screen"] = screen.getvalue()
    second = run_pipeline_locally(arguments, str(root / "kfp-root"), stream=io.StringIO())
    return arguments, first, second, root


def test_runs_register_successive_versions_without_touching_each_other(two_runs):
    _, first, second, root = two_runs
    assert first["model_version"] == "pipeline-test/1"
    assert second["model_version"] == "pipeline-test/2"
    assert first["model_uri"] != second["model_uri"]
    assert len(list((root / "artifacts" / "runs").iterdir())) == 2


def test_the_run_shows_a_short_line_per_task_and_keeps_every_log(two_runs):
    _, first, _, _ = two_runs
    lines = first["screen"].splitlines()
    tasks = ["export-vocab", "plan-shards-128", "plan-shards-512", "merge-manifest-128", "merge-manifest-512", "train-phase-128", "train-phase-512", "evaluate", "register-model"]
    finished = [re.match(r"[\d:]{8} finished (\S+) in ", line).group(1) for line in lines if " finished " in line]
    assert set(tasks) <= set(finished) and len(finished) == len(set(finished))
    assert all(line.startswith("running ") or re.match(r"[\d:]{8} (started |finished |train-phase-)", line) for line in lines)
    assert len(lines) + 12 <= 60  # with the summary, a run fits a screen
    assert re.search(r"finished train-phase-128 in \S+: 20 steps, final loss \d+\.\d{3}, [\d,]+ tok", first["screen"])
    logs = Path(first["logs"])
    assert logs.parent.name == first["model_uri"].split("/runs/")[1].split("/")[0]
    assert sorted(path.stem for path in logs.glob("*.log")) == sorted(["pipeline", *finished])
    assert "Got executor_input" in (logs / "train-phase-128.log").read_text()


def test_the_first_version_is_champion_only_if_it_clearly_beats_the_trivial_baselines(two_runs):
    arguments, first, _, _ = two_runs
    intervals = json.loads(Path(first["evaluation_uri"], "metrics.json").read_text())["baseline_intervals"]
    beats = all(intervals[f"{name}_512"]["low"] > 0 for name in BASELINE_OF)
    tags = mlflow.MlflowClient(arguments["tracking_uri"]).get_model_version("pipeline-test", "1").tags
    assert tags["bertpipe.promotion.decision"] == ("promoted" if beats else "kept")
    assert "vs trivial" in tags["bertpipe.promotion.reasons"] and "% interval [" in tags["bertpipe.promotion.reasons"]
    assert tags["bertpipe.baseline_interval.mlm_accuracy_at_mask_512"].startswith(f"{intervals['mlm_accuracy_at_mask_512']['difference']:+.6f} [")
    assert tags["bertpipe.promotion.decided_by"].startswith("pipeline run ")


def test_the_second_run_reuses_the_vocab_and_the_data(two_runs):
    _, first, second, root = two_runs
    assert reuse_lines(first) == []
    assert reuse_lines(second) == ["reused:            vocab, data-128, data-512 (complete and verified, same inputs and settings)"]
    for name in ("vocab", "data_128", "data_512"):
        assert first[name].metadata["uri"] == second[name].metadata["uri"] and first[name].metadata["uri"].startswith(str(root / "artifacts" / "cache"))
    assert "reused the data at" in Path(second["logs"], "plan-shards-128.log").read_text()


def test_same_settings_give_the_same_metrics(two_runs):
    _, first, second, _ = two_runs
    assert first["metrics"] == second["metrics"]
    assert set(first["metrics"]) >= {"mlm_accuracy_128", "perplexity_512", "nsp_accuracy_512"}


def test_mlflow_holds_the_run_params_metrics_and_model(two_runs):
    arguments, first, _, _ = two_runs
    client = mlflow.MlflowClient(arguments["tracking_uri"])
    experiment = client.get_experiment_by_name("pipeline-test")
    runs = client.search_runs([experiment.experiment_id])
    steps = [r.data.tags.get("bertpipe.step", "") for r in runs]
    nested = [r.data.tags.get("bertpipe.step", "") for r in runs if r.data.tags.get("mlflow.parentRunId")]
    # The second run reused vocab and data, so only the first logged them; content-keyed tasks take no run id
    # (Kubeflow can cache them), so their runs are not nested under a pipeline run.
    assert steps.count("export-vocab") == steps.count("create-pretraining-data") / 2 == 1 and "export-vocab" not in nested
    assert nested.count("train-phase-128") == nested.count("evaluate") == 2
    train_runs = [r for r in runs if "learning_rate" in r.data.params]
    assert len(train_runs) == 4 and all("loss" in r.data.metrics for r in train_runs)
    # Phase 1 logged every 10 of its 20 steps.
    histories = sorted(len(client.get_metric_history(run.info.run_id, "loss")) for run in train_runs)
    assert histories[-1] == 2


def test_registered_version_fills_a_mask(two_runs):
    arguments, first, _, _ = two_runs
    mlflow.set_tracking_uri(arguments["tracking_uri"])
    pipeline = mlflow.transformers.load_model(f"models:/{first['model_version']}")
    predictions = pipeline("the king [MASK] the queen .")
    assert len(predictions) == 5
    assert all(isinstance(p["token_str"], str) and 0.0 <= p["score"] <= 1.0 for p in predictions)
    assert json.dumps(predictions)  # plain data, servable as JSON
    ours = fill_mask("the king [MASK] the queen .", f"models:/{first['model_version']}", tracking_uri=arguments["tracking_uri"])
    assert [p["token"] for p in ours["masks"][0]["predictions"]] == [p["token_str"].replace(" ", "") for p in predictions]
