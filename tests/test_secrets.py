"""No secret in logs, error messages, written files, S3 objects, MLflow runs, server logs or the compiled YAML."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import mlflow
import pytest

from components.core import storage
from components.core.errors import BertpipeError
from components.core.tracking import MetricsBuffer, Tracking, log_metrics, step_run


def _leaks(secret: str, text: str | bytes) -> bool:
    needle = secret.encode() if isinstance(text, bytes) else secret
    return needle in text


def test_no_secret_anywhere_after_storage_and_tracking_work(servers_env, tmp_path, caplog, capfd, monkeypatch):
    secret = servers_env.secret
    wrong_secret = "bertpipe-FAKE-SECRET-wrong-" + uuid.uuid4().hex
    assert secret.startswith("bertpipe-FAKE-SECRET-")
    caplog.set_level(logging.DEBUG)  # botocore, urllib3 and mlflow at their most verbose
    root = f"s3://{servers_env.bucket}/secrets/{uuid.uuid4().hex[:8]}"
    messages = []

    storage.write_json(storage.join(root, "info.json"), {"ok": True})
    with storage.staged_dir(storage.join(root, "checkpoint")) as folder:
        (folder / "weights.bin").write_bytes(b"\x00" * 1000)
    with storage.local_dir(storage.join(root, "checkpoint")) as folder:
        assert (folder / "weights.bin").stat().st_size == 1000
    storage.download_dir(storage.join(root, "checkpoint"), tmp_path / "local-copy")
    for failing in (lambda: storage.read_text(storage.join(root, "missing.txt")), lambda: storage.read_text("s3://no-such-bucket/x")):
        with pytest.raises(BertpipeError) as error:
            failing()
        messages.append(str(error.value))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    with pytest.raises(BertpipeError) as error:
        storage.write_text(storage.join(root, "denied.txt"), "x")
    messages.append(str(error.value))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)

    tracking = Tracking(tracking_uri=servers_env.tracking_uri, experiment="secrets", pipeline_run_id="secrets-run")
    with step_run(tracking, "train-phase", {"output_dir": root, "learning_rate": 1e-4}) as run_id:
        log_metrics({"loss": 1.0}, step=1)
        buffer = MetricsBuffer(servers_env.tracking_uri, run_id, flush_interval=0.1)
        buffer.log({"loss": 0.5}, step=2)
        assert buffer.close(timeout=10).complete
        mlflow.log_text("artifact text", "notes/readme.txt")

    places: dict[str, str | bytes] = {"log records": caplog.text, "stdout/stderr": "".join(capfd.readouterr()), "error messages": "\n".join(messages)}
    for path in tmp_path.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes()
    for uri in storage.list_files(f"s3://{servers_env.bucket}"):
        places[uri] = storage.read_bytes(uri)
    client = mlflow.MlflowClient(servers_env.tracking_uri)
    for run in client.search_runs([client.get_experiment_by_name("secrets").experiment_id]):
        places[f"MLflow run {run.info.run_id}"] = repr(run.data.params) + repr(run.data.tags)
    places["S3 server log"] = servers_env.stack.s3.log_path.read_bytes()
    places["MLflow server log"] = servers_env.stack.mlflow.log_path.read_bytes()

    assert any(place.endswith("notes/readme.txt") for place in places)  # MLflow's artifacts were searched too
    assert _leaks(secret, (servers_env.stack.s3.directory / "s3-identities.json").read_bytes())  # the search does find it
    leaked = [place for place, text in places.items() if _leaks(secret, text) or _leaks(wrong_secret, text)]
    assert leaked == []


def test_compiled_pipeline_holds_no_secret(tmp_path, monkeypatch):
    from kfp import compiler

    from pipelines.bert_pretraining import bert_pretraining

    secret = "bertpipe-FAKE-SECRET-compile-" + uuid.uuid4().hex
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "bertpipe-fake-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(bert_pretraining, str(path))
    text = path.read_text()
    assert secret not in text and "bertpipe-fake-key-id" not in text
    assert "AWS_SECRET_ACCESS_KEY" not in text or "secretKeyRef" in text  # only ever as a Kubernetes secret reference


def test_server_identity_file_is_private(servers):
    identities = Path(servers.stack.s3.directory) / "s3-identities.json"
    assert identities.stat().st_mode & 0o077 == 0
