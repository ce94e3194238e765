"""Faults of real servers: S3 killed mid-publication, S3 that never answers, MLflow down, bad credentials and keys."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import mlflow
import pytest

from components.core import storage
from components.core.errors import BertpipeError
from components.core.tracking import MetricsBuffer, Tracking, background_step_run, step_run


def _checkpoint_files(count: int, size: int, seed: int) -> dict[str, bytes]:
    return {f"shard-{i:03d}.bin": bytes([seed]) * size for i in range(count)}


def _publish(uri: str, files: dict[str, bytes]) -> None:
    with storage.staged_dir(uri) as folder:
        for name, data in files.items():
            (folder / name).write_bytes(data)


def _latest_published(prefix: str) -> str | None:
    """What a resume does: the newest sub-folder whose publication completed."""
    manifests = [uri for uri in storage.list_files(prefix) if uri.endswith("/" + storage.PUBLISHED_FILE)]
    return manifests[-1].rpartition("/")[0] if manifests else None


def _kill_when_objects_appear(server, bucket: str, key_prefix: str, count: int) -> threading.Thread:
    """Kill the S3 server (SIGKILL, like a crash) as soon as count objects exist under key_prefix."""
    client = server.client()

    def watch():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listing = client.list_objects_v2(Bucket=bucket, Prefix=key_prefix)
            if listing.get("KeyCount", 0) >= count:
                server.stop(kill=True)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_s3_killed_mid_checkpoint_upload_leaves_the_previous_checkpoint_for_resume(fresh_s3):
    prefix = f"s3://{fresh_s3.bucket}/run/checkpoints"
    first, second = f"{prefix}/step-000100", f"{prefix}/step-000200"
    _publish(first, _checkpoint_files(3, 1000, seed=1))

    new_files = _checkpoint_files(40, 200_000, seed=2)
    watcher = _kill_when_objects_appear(fresh_s3, fresh_s3.bucket, "run/checkpoints/step-000200/", 4)
    started = time.monotonic()
    with pytest.raises(BertpipeError, match=r"cannot reach S3 at http://127\.0\.0\.1:\d+ .*is the server up"):
        _publish(second, new_files)
    assert time.monotonic() - started < 30
    watcher.join()

    fresh_s3.start()  # same data folder and ports: the crash lost nothing already acknowledged
    assert _latest_published(prefix) == first
    with pytest.raises(BertpipeError, match="publication was interrupted; re-run the step"):
        storage.read_published(second)
    with storage.local_dir(first) as folder:
        assert {p.name: p.read_bytes() for p in folder.glob("shard-*")} == _checkpoint_files(3, 1000, seed=1)

    _publish(second, new_files)  # the re-run completes
    assert _latest_published(prefix) == second
    assert len(storage.read_published(second)["files"]) == 40


def test_s3_restarted_within_the_retry_window_lets_the_upload_finish(fresh_s3, monkeypatch):
    monkeypatch.setenv("BERTPIPE_S3_MAX_ATTEMPTS", "10")
    uri = f"s3://{fresh_s3.bucket}/run/checkpoints/step-000300"
    files = _checkpoint_files(30, 100_000, seed=3)
    watcher = _kill_when_objects_appear(fresh_s3, fresh_s3.bucket, "run/checkpoints/step-000300/", 3)

    def restart_after_kill():
        watcher.join()
        time.sleep(0.5)
        fresh_s3.start()

    restarter = threading.Thread(target=restart_after_kill, daemon=True)
    restarter.start()
    _publish(uri, files)
    restarter.join()
    with storage.local_dir(uri) as folder:
        assert {p.name: p.read_bytes() for p in folder.glob("shard-*")} == files


@pytest.fixture
def black_hole():
    """A TCP server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_s3_that_never_answers_fails_within_bounded_time(servers_env, black_hole, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", black_hole)
    monkeypatch.setenv("BERTPIPE_S3_READ_TIMEOUT", "2")
    started = time.monotonic()
    with pytest.raises(BertpipeError, match=r"S3 at http://127\.0\.0\.1:\d+ did not answer for s3://bertpipe/x \(timed out after 2 s, 2 attempts\)"):
        storage.read_bytes("s3://bertpipe/x")
    elapsed = time.monotonic() - started
    assert elapsed < 20, elapsed  # 2 attempts x 3 s + backoff; the default (4 x 20 s) stays near a minute


@pytest.fixture
def product_http_defaults(monkeypatch):
    """The environment of a user who set none of MLflow's HTTP variables (the tests set short ones globally)."""
    from components.core.tracking import HTTP_DEFAULTS

    for name in HTTP_DEFAULTS:
        monkeypatch.setenv(name, "")  # recorded, so whatever the product sets is undone after the test
        monkeypatch.delenv(name)


def _closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


# MLflow's own client defaults (7 retries, backoff factor 2, 120 s timeout) take over ten minutes here;
# the product's own defaults give up on one request after about 50 s.
PRODUCT_BOUND_S = 120


@pytest.mark.parametrize("server", ["closed port", "never answers"])
def test_dead_or_hanging_mlflow_fails_the_step_start_with_the_products_own_bounds(server, black_hole, product_http_defaults):
    tracking_uri = _closed_port() if server == "closed port" else black_hole
    started = time.monotonic()
    with pytest.raises(BertpipeError, match=f"^MLflow at {tracking_uri} failed while starting the train run: "):
        with step_run(Tracking(tracking_uri=tracking_uri, experiment="never"), "train"):
            pass
    elapsed = time.monotonic() - started
    assert elapsed < PRODUCT_BOUND_S, f"took {elapsed:.0f} s: fails, but not within the product's bounds"
    assert {name: os.environ[name] for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")} == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}


def test_a_run_opened_in_the_background_that_cannot_open_fails_the_step_at_its_next_log(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = _closed_port()
    refused = f"^MLflow at {dead} failed while starting the train-phase-128 run: "
    with pytest.raises(BertpipeError, match=refused):  # and a block that swallowed it still fails at its end
        with background_step_run(Tracking(tracking_uri=dead, experiment="never"), "train-phase-128") as metrics:
            with pytest.raises(BertpipeError, match=refused):
                deadline = time.monotonic() + PRODUCT_BOUND_S
                while time.monotonic() < deadline:  # the training steps go on until the refusal is known
                    metrics.log({"loss": 1.0}, step=1)
                    time.sleep(0.05)


def test_a_background_run_that_could_not_open_before_a_short_block_ended_fails_it_at_the_end(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = _closed_port()
    with pytest.raises(BertpipeError, match=f"^MLflow at {dead} failed while starting the train-phase-128 run: "):
        with background_step_run(Tracking(tracking_uri=dead, experiment="never"), "train-phase-128") as metrics:
            metrics.log({"loss": 1.0}, step=1)


def test_a_users_own_mlflow_http_settings_win(black_hole, product_http_defaults, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(BertpipeError, match=f"MLflow at {black_hole} failed while starting the train run"):
        with step_run(Tracking(tracking_uri=black_hole, experiment="never"), "train"):
            pass
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "1" and os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"  # only what the user left unset is the product's


def test_wrong_credentials_are_refused_clearly_and_write_nothing(servers_env, monkeypatch):
    key = f"creds/{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(BertpipeError, match=r"refused the credentials for .* \(SignatureDoesNotMatch\): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"):
        storage.write_text(f"s3://{servers_env.bucket}/{key}/a.txt", "x")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(BertpipeError, match=r"refused the credentials .*\((InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied)\)"):
        with storage.staged_dir(f"s3://{servers_env.bucket}/{key}/folder") as folder:
            (folder / "b.txt").write_text("y")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", servers_env.env["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", servers_env.secret)
    assert storage.list_files(f"s3://{servers_env.bucket}/{key}") == []


def test_missing_bucket_is_reported_and_not_created(servers_env):
    for action in (lambda: storage.write_text("s3://no-such-bucket/a.txt", "x"), lambda: storage.read_text("s3://no-such-bucket/a.txt"),
                   lambda: storage.exists("s3://no-such-bucket/a.txt"), lambda: storage.list_files("s3://no-such-bucket/p")):
        with pytest.raises(BertpipeError, match=r"S3 bucket 'no-such-bucket' of s3://no-such-bucket/\S+ does not exist at http://127\.0\.0\.1:\d+: create it"):
            action()
    assert "no-such-bucket" not in [b["Name"] for b in storage.s3_client().list_buckets()["Buckets"]]


@pytest.mark.parametrize("trick", ["../escaped", "a/../../escaped", "./escaped", "a//escaped", "a\\..\\escaped"])
def test_path_tricks_are_refused_and_nothing_is_written_outside_the_prefix(servers_env, tmp_path, trick):
    prefix = f"s3://{servers_env.bucket}/tricks/{uuid.uuid4().hex[:8]}"
    before = set(storage.list_files(f"s3://{servers_env.bucket}"))
    with pytest.raises(BertpipeError, match="may not contain"):
        storage.write_text(f"{prefix}/{trick}", "x")
    with pytest.raises(BertpipeError, match="may not contain"):
        storage.write_text(storage.join(prefix, trick), "x")
    if "//" not in trick:  # a local "a//b" is just "a/b", inside the root
        with pytest.raises(BertpipeError, match="may not contain"):
            storage.write_text(storage.join(str(tmp_path / "root"), trick), "x")
    assert set(storage.list_files(f"s3://{servers_env.bucket}")) == before
    assert not list(tmp_path.rglob("escaped"))


def test_training_keeps_going_while_mlflow_is_down_and_catches_up_after(servers_env):
    tracking = Tracking(tracking_uri=servers_env.tracking_uri, experiment="faults")
    with step_run(tracking, "train-phase") as run_id:
        buffer = MetricsBuffer(servers_env.tracking_uri, run_id, flush_interval=0.2, max_backoff=1.0)
        buffer.log({"loss": 10.0}, step=1)
        servers_env.stop_mlflow(kill=True)
        started = time.monotonic()
        for step in range(2, 52):
            buffer.log({"loss": 10.0 - step / 10}, step=step)
        assert time.monotonic() - started < 1.0  # logging never waits for the server
        time.sleep(1.0)
        servers_env.start_mlflow()
        report = buffer.close(timeout=20)
    assert report.complete and report.logged == 51, report.summary()
    history = mlflow.MlflowClient(servers_env.tracking_uri).get_metric_history(run_id, "loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 52))


def test_mlflow_down_at_the_end_of_training_is_reported_not_fatal(servers_env, caplog):
    tracking = Tracking(tracking_uri=servers_env.tracking_uri, experiment="faults")
    with step_run(tracking, "train-phase", strict_close=False) as run_id:
        buffer = MetricsBuffer(servers_env.tracking_uri, run_id, flush_interval=0.2, max_backoff=1.0)
        buffer.log({"loss": 3.0}, step=1)
        deadline = time.monotonic() + 10
        while buffer._pending and time.monotonic() < deadline:  # noqa: SLF001 - wait for the first flush
            time.sleep(0.05)
        servers_env.stop_mlflow(kill=True)
        for step in range(2, 12):
            buffer.log({"loss": 3.0, "learning_rate": 1e-4}, step=step)
        report = buffer.close(timeout=3)
    assert (report.logged, report.unlogged) == (1, 20)
    assert report.summary().startswith("20 metric values were NOT logged to MLflow (steps 2-11), 1 were; last error: MLflow at http://")
    assert "the run stays RUNNING in MLflow" in caplog.text


def test_registration_with_mlflow_down_fails_clearly_and_can_be_rerun(servers_env, tmp_path):
    from components.registry.register import register_model
    from components.vocab.export import VocabSettings, export_vocab
    from tests.test_registry import make_model_folder

    vocab = tmp_path / "vocab"
    export_vocab(str(vocab), corpus="demo", settings=VocabSettings(vocab_size=300))
    model_uri = f"s3://{servers_env.bucket}/registration/{uuid.uuid4().hex[:8]}/model"
    storage.publish_dir(make_model_folder(tmp_path / "model", vocab), model_uri)
    tracking = Tracking(tracking_uri=servers_env.tracking_uri, experiment="faults", pipeline_run_id="faults-registration")
    name = f"faults-{uuid.uuid4().hex[:6]}"

    servers_env.stop_mlflow(kill=True)
    started = time.monotonic()
    with pytest.raises(BertpipeError, match=f"MLflow at {servers_env.tracking_uri} failed while starting the register run"):
        register_model(model_uri, name, tracking=tracking)
    assert time.monotonic() - started < 30

    servers_env.start_mlflow()
    result = register_model(model_uri, name, tracking=tracking)
    assert result["version"] == "1"
    logged = storage.list_files(f"s3://{servers_env.bucket}/mlflow")
    assert any(uri.endswith("model.safetensors") for uri in logged), logged


def test_training_step_survives_mlflow_dying_mid_run(servers_env, tmp_path):
    """The real train-phase: the MLflow server is killed once the run has started; training finishes and says what was lost."""
    from components.training.phase import train_phase
    from components.training.settings import TrainingSettings
    from tests.instance_factory import make_data, make_vocab

    vocab = make_vocab(str(tmp_path / "vocab"), vocab_size=900)
    data = make_data(str(tmp_path / "data"), vocab, max_seq_length=64, shards={"train": [64], "dev": [8]})
    tracking = Tracking(tracking_uri=servers_env.tracking_uri, experiment="faults-training")
    client = mlflow.MlflowClient(servers_env.tracking_uri)

    def kill_once_the_run_has_started():
        # Once its params are in: a server dying while the run is being created is a different failure (the step stops; nothing trained yet).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            experiment = client.get_experiment_by_name("faults-training")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and runs[0].data.params:
                servers_env.stop_mlflow(kill=True)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_once_the_run_has_started)
    killer.start()
    summary = train_phase(data, vocab, str(tmp_path / "phase"), settings=TrainingSettings(max_seq_length=64, max_steps=40, per_device_train_batch_size=8, logging_steps=5, warmup_steps=2, seed=1), tracking=tracking)
    killer.join()
    assert summary["steps"] == 40
    assert (tmp_path / "phase" / "model" / "model.safetensors").is_file()
    assert "were NOT logged to MLflow" in summary["mlflow_logging"]
