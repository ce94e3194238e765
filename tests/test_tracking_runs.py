"""MLflow bookkeeping: the default tracking URI, run statuses (FINISHED, FAILED, KILLED on the next start), masked URIs."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap

import mlflow
import pytest

from components.core.errors import BertpipeError
from components.core.redact import mask
from components.core.tracking import Tracking, background_step_run, close_pipeline_run, step_run
from pipelines.cli import build_parser


def runs_of(tracking: Tracking):
    client = mlflow.MlflowClient(tracking.tracking_uri)
    experiment = client.get_experiment_by_name(tracking.experiment)
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def test_mlflow_tracking_uri_is_the_default_of_every_command_that_takes_one(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:pw@mlflow.example:5000")
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("run", "promote", "rollback", "evaluate", "register", "export-vocab", "train-phase"):
        defaults = {action.dest: action.default for action in commands[name]._actions}
        assert defaults["tracking_uri"] == "http://alice:pw@mlflow.example:5000", name
        assert "alice:pw" not in commands[name].format_help() and "$MLFLOW_TRACKING_URI" in commands[name].format_help(), name
    assert Tracking().tracking_uri == "http://alice:pw@mlflow.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert Tracking().tracking_uri == "sqlite:///mlflow.db"


def test_a_sqlite_store_keeps_its_artifacts_beside_the_database_whatever_the_working_folder(tmp_path, monkeypatch):
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tracking = Tracking(f"sqlite:///{store}/mlflow.db", "a/b experiment")
    with step_run(tracking, "report"):
        mlflow.log_text("hello", "report.md")
    run = runs_of(tracking)[0]
    assert mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="report.md", tracking_uri=tracking.tracking_uri,
                                               dst_path=str(tmp_path / "got")).endswith("report.md")
    assert (store / "mlruns" / "a-b-experiment" / run.info.run_id / "artifacts" / "report.md").read_text() == "hello"
    assert list(elsewhere.iterdir()) == []


def test_runs_end_finished_or_failed_and_a_killed_attempt_is_marked_killed(tmp_path):
    tracking = Tracking(f"sqlite:///{tmp_path}/mlflow.db", "statuses", "pipeline-7")
    mlflow.MlflowClient(tracking.tracking_uri).create_experiment("statuses", artifact_location=str(tmp_path / "artifacts"))
    # An attempt of the step killed mid-run (SIGKILL: no finally, no end_run).
    killed = textwrap.dedent(f"""
        import os, signal
        from components.core.tracking import Tracking, step_run
        with step_run(Tracking({tracking.tracking_uri!r}, "statuses", "pipeline-7"), "train-phase-128", {{"max_steps": 10}}):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", killed], timeout=300).returncode == -9
    with step_run(Tracking(tracking.tracking_uri, "statuses", "pipeline-7"), "train-phase-512", {"max_steps": 10}):
        pass  # another task of the same pipeline run leaves it alone
    assert [run.info.status for run in runs_of(tracking)] == ["RUNNING", "RUNNING", "FINISHED"]

    with step_run(tracking, "train-phase-128", {"max_steps": 10}):  # the retry of the killed task
        pass
    with pytest.raises(ValueError):
        with step_run(tracking, "evaluate"):
            raise ValueError("the step failed")
    statuses = {(run.data.tags.get("bertpipe.step", "parent"), run.info.status) for run in runs_of(tracking)}
    assert statuses == {("parent", "RUNNING"), ("train-phase-128", "KILLED"), ("train-phase-128", "FINISHED"),
                        ("train-phase-512", "FINISHED"), ("evaluate", "FAILED")}
    close_pipeline_run(tracking)
    assert ("parent", "FINISHED") in {(run.data.tags.get("bertpipe.step", "parent"), run.info.status) for run in runs_of(tracking)}


def test_a_background_run_keeps_what_was_logged_before_it_opened_and_ends_with_the_blocks_status(tmp_path):
    tracking = Tracking(f"sqlite:///{tmp_path}/mlflow.db", "background", "pipeline-9")
    with background_step_run(tracking, "train-phase-128", {"max_steps": 3}) as metrics:
        for step in (1, 2, 3):  # queued at once, whether or not the run is open yet
            metrics.log({"loss": 4.0 - step, "grad_norm": float("nan")}, step=step)
        report = metrics.close()
    with pytest.raises(ValueError, match="training diverged"):
        with background_step_run(tracking, "train-phase-512", {"max_steps": 3}):
            raise ValueError("training diverged")
    runs = {run.data.tags["bertpipe.step"]: run for run in runs_of(tracking) if "bertpipe.step" in run.data.tags}
    assert {step: run.info.status for step, run in runs.items()} == {"train-phase-128": "FINISHED", "train-phase-512": "FAILED"}
    assert (report.complete, report.logged) == (True, 3)
    history = mlflow.MlflowClient(tracking.tracking_uri).get_metric_history(runs["train-phase-128"].info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert runs["train-phase-128"].data.params == {"max_steps": "3"} and runs["train-phase-128"].data.tags["mlflow.parentRunId"]


def test_mask_hides_userinfo_only():
    assert mask("MLflow at https://alice:s3cret@mlflow.example/ and s3://bucket/key") == "MLflow at https://***@mlflow.example/ and s3://bucket/key"
    assert mask("http://127.0.0.1:5000/#/experiments/1") == "http://127.0.0.1:5000/#/experiments/1"


def test_credentials_in_the_tracking_uri_are_never_printed_or_logged(servers_env, caplog, capfd, monkeypatch):
    password = "bertpipe-FAKE-SECRET-tracking-pw"
    with_userinfo = servers_env.tracking_uri.replace("://", f"://alice:{password}@")
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)
    caplog.set_level(logging.INFO)
    with step_run(Tracking(with_userinfo, "masked", "masked-run"), "evaluate", {"tracking": with_userinfo}) as run_id:
        mlflow.log_metric("loss", 1.0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://alice:{password}@127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(BertpipeError) as error:
        with step_run(Tracking(dead, "masked"), "evaluate"):
            pass
    printed = "".join(capfd.readouterr()) + caplog.text + str(error.value)
    assert password not in printed
    assert password not in repr(mlflow.MlflowClient(servers_env.tracking_uri).get_run(run_id).data.params)
    assert f"/runs/{run_id}" in caplog.text and "alice:" not in printed and "http://***@127.0.0.1" in str(error.value)
