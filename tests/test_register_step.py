"""The evaluate and register-and-promote steps end to end, as the pipeline and the CLI run them (embedded sqlite MLflow).

Two real training phases (64 then 128 tokens, a few steps) make the model, so the
traceability tags come from real training summaries; the second evaluation finds the
first run's version as champion and evaluates it on the same instances.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pytest

from components.core.errors import BertpipeError
from components.core.model_store import CHAMPION, alias_version
from components.core.tracking import Tracking
from components.evaluation.evaluate import EvaluationSettings, evaluate
from components.core.instances import manifest_sha256
from components.registry.promotion import promote
from components.registry.settings import PromotionSettings
from components.registry.register import register_model
from components.registry.step import register_and_promote
from components.training.phase import train_phase
from components.training.settings import TrainingSettings
from pipelines.local_run import summary_lines
from tests.instance_factory import make_data, make_vocab

NAME = "step-bert"
EXPERIMENT = "register-step"
AT_128 = PromotionSettings(promotion_metric="mlm_accuracy_128", promotion_over_baseline=False)  # 64- and 128-token test data; 3-step models


def bertpipe(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run folder laid out like the pipeline's: data-64, data-128, phase-64, phase-128 (started from phase-64)."""
    run = tmp_path_factory.mktemp("run")
    vocab = make_vocab(str(run / "vocab"), vocab_size=1000)
    data = {length: make_data(str(run / f"data-{length}"), vocab, max_seq_length=length, shards={"train": [24], "test": [12]}, seed=length)
            for length in (64, 128)}
    train_phase(data[64], vocab, str(run / "phase-64"),
                settings=TrainingSettings(max_seq_length=64, max_steps=3, per_device_train_batch_size=4, warmup_steps=1, seed=1))
    train_phase(data[128], vocab, str(run / "phase-128"), settings=TrainingSettings(
        init_model=str(run / "phase-64" / "model"), max_seq_length=128, max_steps=2, per_device_train_batch_size=4, warmup_steps=1, seed=1))
    uri = f"sqlite:///{run}/mlflow.db"
    mlflow.MlflowClient(tracking_uri=uri).create_experiment(EXPERIMENT, artifact_location=str(run / "mlflow-artifacts"))
    return {"run": run, "data": data, "model": str(run / "phase-128" / "model"), "tracking_uri": uri}


def tracking(trained, pipeline_run_id: str) -> Tracking:
    return Tracking(trained["tracking_uri"], EXPERIMENT, pipeline_run_id)


@pytest.fixture(scope="module")
def first(trained):
    """Run 1: evaluate (no champion yet), then register and promote."""
    run = trained["run"]
    evaluation = evaluate(trained["model"], trained["data"], str(run / "evaluation"), registered_model_name=NAME,
                          settings=EvaluationSettings(per_device_eval_batch_size=4), tracking=tracking(trained, "run-1"))
    result = register_and_promote(trained["model"], str(run / "evaluation"), trained["data"], registered_model_name=NAME,
                                  settings=AT_128, tracking=tracking(trained, "run-1"), actor="pipeline")
    return evaluation, result


def test_first_registration_is_champion_with_tags_from_manifests_and_training_summaries(trained, first):
    evaluation, result = first
    assert evaluation["champion"] == {"registered_model_name": NAME, "version": None, "metrics": None,
                                      "note": f"{NAME} has no champion yet: the new version is compared with the trivial baselines and the promotion floor only."}
    assert result["version"] == "1" and result["promotion"]["decision"] == "promoted"
    client = mlflow.MlflowClient(trained["tracking_uri"])
    tags = client.get_model_version(NAME, "1").tags
    assert {key: tags[key] for key in tags if key.startswith("bertpipe.phase")} == {
        "bertpipe.phase1_steps": "3", "bertpipe.phase1_max_seq_length": "64", "bertpipe.phase2_steps": "2", "bertpipe.phase2_max_seq_length": "128",
    }
    for length in (64, 128):
        assert tags[f"bertpipe.data_{length}_manifest_sha256"] == manifest_sha256(trained["data"][length])
    assert float(tags["metric.mlm_accuracy_128"]) == evaluation["metrics"]["mlm_accuracy_128"]
    nsp = evaluation["baseline_intervals"]["nsp_accuracy_128"]
    assert tags["bertpipe.baseline_interval.nsp_accuracy_128"] == (f"{nsp['difference']:+.6f} [{nsp['low']:+.6f}, {nsp['high']:+.6f}] level 0.95 "
                                                                   f"instances 12 units 12")
    report = (trained["run"] / "report.md").read_text()
    assert "New model minus trivial baseline on the same instances" in report and "| nsp_accuracy_128 |" in report
    assert result["report_uri"] == str(trained["run"] / "report.md")
    assert "became **champion**" in report and "![phase 64](phase-64/plots/loss_curve.png)" in report and "## max_seq_length 128" in report


def test_mlflow_runs_are_closed_the_parent_run_too(trained, first):
    client = mlflow.MlflowClient(trained["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id], filter_string="tags.`bertpipe.pipeline_run_id` = 'run-1'")
    statuses = {run.data.tags.get("bertpipe.step", "parent"): run.info.status for run in runs}
    assert statuses == {"parent": "FINISHED", "evaluate": "FINISHED", "register": "FINISHED", "report": "FINISHED"}


def test_the_next_evaluation_measures_the_champion_on_the_same_instances(trained, first):
    evaluation, _ = first
    again = evaluate(trained["model"], trained["data"], str(trained["run"] / "evaluation-2"), registered_model_name=NAME,
                     settings=EvaluationSettings(per_device_eval_batch_size=4))
    # The champion is the same weights (downloaded from the registry): the same numbers on the same instances.
    assert again["champion"]["version"] == "1" and again["champion"]["metrics"] == pytest.approx(evaluation["metrics"], rel=1e-6)
    assert "## New model vs champion (version 1), same test data" in (trained["run"] / "evaluation-2" / "report.md").read_text()


def test_a_conflict_exits_non_zero_from_the_cli_and_tags_the_version_it_was_compared_with(trained, first, tmp_path):
    """Evaluated against champion 1, but someone promoted version 2 meanwhile: nothing moves, exit 2, compared_with 1.

    The CLI runs without --tracking-uri, from an empty folder: MLFLOW_TRACKING_URI is its default.
    """
    run = trained["run"]
    evaluate(trained["model"], trained["data"], str(run / "evaluation-3"), registered_model_name=NAME, settings=EvaluationSettings(per_device_eval_batch_size=4))
    other = register_model(trained["model"], NAME, tracking=tracking(trained, ""))
    promote(NAME, other["version"], tracking_uri=trained["tracking_uri"], reason="hand-picked", actor="bob")

    env = {**os.environ, "MLFLOW_TRACKING_URI": trained["tracking_uri"]}
    result = bertpipe("register", "--model-uri", trained["model"], "--evaluation-uri", str(run / "evaluation-3"), "--experiment", EXPERIMENT,
                      "--data-uris", json.dumps(trained["data"]), "--registered-model-name", NAME, "--report-uri", str(tmp_path / "report.md"),
                      "--promotion-metric", AT_128.promotion_metric, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"bertpipe: error: promotion of {NAME} version 3 ended in a conflict (champion is 2, but the champion metrics given are for 1")
    registration = json.loads(result.stdout)
    assert registration["promotion"]["decision"] == "conflict"
    # `bertpipe run` prints the same registration in its summary (and then exits 2 the same way).
    summary = summary_lines({"registration": registration, "metrics": {}, "model_uri": trained["model"], "logs": str(run / "logs")},
                            {"artifact_root": str(run), "tracking_uri": "http://alice:pw@mlflow.example", "experiment": EXPERIMENT})
    assert "promotion:         conflict: champion is 2, but the champion metrics given are for 1; evaluate the current champion" in summary
    assert "MLflow:            http://***@mlflow.example (experiment register-step)" in summary
    client = mlflow.MlflowClient(trained["tracking_uri"])
    assert client.get_model_version(NAME, "3").tags["bertpipe.promotion.compared_with"] == "1"
    assert alias_version(client, NAME, CHAMPION) == "2"
    assert "was **not promoted**" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "mlflow.db").exists()


def test_registration_refuses_an_evaluation_of_other_data_or_another_registered_model(trained, first, tmp_path):
    other = make_data(str(tmp_path / "other-64"), str(trained["run"] / "vocab"), max_seq_length=64, shards={"test": [5]}, seed=99)
    with pytest.raises(BertpipeError, match="was not measured on"):
        register_and_promote(trained["model"], str(trained["run"] / "evaluation"), {**trained["data"], 64: other}, registered_model_name=NAME,
                             tracking=tracking(trained, ""))
    with pytest.raises(BertpipeError, match="compared with the champion of 'step-bert', not 'another'"):
        register_and_promote(trained["model"], str(trained["run"] / "evaluation"), trained["data"], registered_model_name="another",
                             tracking=tracking(trained, ""))
    with pytest.raises(BertpipeError, match="promotion_metric='loss_512': must be one of"):
        register_and_promote(trained["model"], str(trained["run"] / "evaluation"), trained["data"], registered_model_name=NAME,
                             settings=PromotionSettings(promotion_metric="loss_512"), tracking=tracking(trained, ""))
