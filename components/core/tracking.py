"""MLflow bookkeeping shared by every step: one parent run per pipeline run, one nested run per step.

Steps run in separate processes (pods, or kfp.local subprocesses), so they meet
through a tag: the parent run is the one tagged with the pipeline run's id. The
DAG starts with a single step (export-vocab), which creates it; later steps find it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from components.core.errors import BertpipeError
from components.core.redact import mask, protect_logs

log = logging.getLogger(__name__)

PIPELINE_RUN_TAG = "bertpipe.pipeline_run_id"
STEP_TAG = "bertpipe.step"
# Which task of the pipeline run a step run is (step name + its params): a retry of a killed task has the same key.
TASK_TAG = "bertpipe.task_key"
FALLBACK_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "bert-pretraining"
# MLflow's own client defaults (7 retries with backoff factor 2, 120 s per request) let a dead or hanging
# server stall a step for over ten minutes. With these, one request gives up after about 50 s at most
# (3 tries of 15 s); each stays the user's to set.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


def default_tracking_uri() -> str:
    """MLflow's convention: $MLFLOW_TRACKING_URI when set, else the embedded store ./mlflow.db."""
    return os.environ.get("MLFLOW_TRACKING_URI") or FALLBACK_TRACKING_URI


@dataclass(frozen=True)
class Tracking:
    """Where a step logs: the MLflow server or store, the experiment, and the pipeline run it belongs to."""

    tracking_uri: str = field(default_factory=default_tracking_uri)
    experiment: str = DEFAULT_EXPERIMENT
    pipeline_run_id: str = ""


def bound_http_defaults() -> None:
    """Put HTTP_DEFAULTS into the environment where the user has not set them (MLflow reads them per request)."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def mlflow_errors(tracking_uri: str, action: str):
    """Report an unreachable or refusing MLflow as one line that names the server (credentials masked).

    Every MLflow call of the product runs inside this block, so it is also where
    the bounded client defaults are put in place, before mlflow sends anything.
    """
    bound_http_defaults()
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException

    try:
        yield
    except (MlflowException, RequestException, ConnectionError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BertpipeError(mask(f"MLflow at {tracking_uri} failed while {action}: {first_line[:300]}")) from error


def _mlflow(tracking_uri: str):
    """mlflow, pointed at tracking_uri, with its logs masked and its own "View run at" prints off (they show
    the URI's credentials; step_run logs a masked link instead)."""
    import mlflow

    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    protect_logs()
    mlflow.set_tracking_uri(tracking_uri)
    return mlflow


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of an embedded sqlite store (sqlite:///relative.db, sqlite:////absolute.db); None for any other store."""
    return Path(tracking_uri[len("sqlite:///"):]) if tracking_uri.startswith("sqlite:///") else None


def _experiment(mlflow, tracking: Tracking):
    """The experiment, made active. In a sqlite store a new one keeps its artifacts beside the database
    (<db folder>/mlruns/<experiment name>), not in MLflow's ./mlruns of whatever folder the step ran in: the store
    stays one folder, as it is when the database is in the current folder (MLflow's default layout)."""
    database = sqlite_database(tracking.tracking_uri)
    if database and mlflow.get_experiment_by_name(tracking.experiment) is None:
        location = database.resolve().parent / "mlruns" / re.sub(r"[^\w.-]+", "-", tracking.experiment)
        try:
            mlflow.create_experiment(tracking.experiment, artifact_location=location.as_uri())
        except mlflow.exceptions.MlflowException:
            pass  # a parallel task created it first
    return mlflow.set_experiment(tracking.experiment)


def _parent_run_id(client, experiment_id: str, pipeline_run_id: str) -> str:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}'", order_by=["attributes.start_time ASC"], max_results=1
    )
    if runs:
        return runs[0].info.run_id
    run = client.create_run(experiment_id, run_name=f"pipeline-{pipeline_run_id[:24]}", tags={PIPELINE_RUN_TAG: pipeline_run_id})
    log.info("created MLflow parent run %s for pipeline run %s", run.info.run_id, pipeline_run_id)
    return run.info.run_id


def _mark_killed(client, experiment_id: str, pipeline_run_id: str, task_key: str) -> None:
    """Runs of this very task left RUNNING by a killed earlier attempt are KILLED, not running forever."""
    stale = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}' and tags.`{TASK_TAG}` = '{task_key}' and attributes.status = 'RUNNING'",
    )
    for run in stale:
        log.warning("MLflow run %s of an earlier attempt of this step was left RUNNING; marking it KILLED", run.info.run_id)
        client.set_terminated(run.info.run_id, status="KILLED")


def _run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return mask(f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}")


@contextlib.contextmanager
def step_run(tracking: Tracking, step: str, params: dict | None = None, strict_close: bool = True) -> Iterator[str]:
    """Start the MLflow run of one step (nested under the pipeline's run) and yield its run id.

    The run ends FINISHED, or FAILED when the block raises. A run of the same task
    (same step and params, same pipeline run) that an earlier, killed attempt left
    RUNNING is marked KILLED first. With strict_close=False a server that fails
    when the run is closed only gets a warning (the run stays RUNNING in MLflow):
    for steps whose real output, say a trained checkpoint, must not be thrown away
    over bookkeeping.
    """
    logged = {key: mask(value)[:6000] for key, value in (params or {}).items()}
    with mlflow_errors(tracking.tracking_uri, f"starting the {step} run"):
        mlflow = _mlflow(tracking.tracking_uri)
        experiment = _experiment(mlflow, tracking)
        tags = {STEP_TAG: step}
        parent_id = None
        if tracking.pipeline_run_id:
            client = mlflow.MlflowClient()
            tags[PIPELINE_RUN_TAG] = tracking.pipeline_run_id
            tags[TASK_TAG] = hashlib.sha256(json.dumps([step, logged], sort_keys=True).encode()).hexdigest()[:32]
            _mark_killed(client, experiment.experiment_id, tracking.pipeline_run_id, tags[TASK_TAG])
            parent_id = _parent_run_id(client, experiment.experiment_id, tracking.pipeline_run_id)
        run = mlflow.start_run(run_name=step, parent_run_id=parent_id, tags=tags)
        if logged:
            mlflow.log_params(logged)
    if tracking.tracking_uri.startswith(("http://", "https://")):
        log.info("MLflow run of %s: %s", step, _run_link(tracking.tracking_uri, experiment.experiment_id, run.info.run_id))
    status = "FAILED"
    try:
        yield run.info.run_id
        status = "FINISHED"
    finally:
        try:
            with mlflow_errors(tracking.tracking_uri, f"closing the {step} run"):
                mlflow.end_run(status=status)
        except BertpipeError as error:
            if strict_close and status == "FINISHED":  # never hide the error that failed the step
                raise
            log.warning("%s; the run stays RUNNING in MLflow", error)


def close_pipeline_run(tracking: Tracking, status: str = "FINISHED") -> None:
    """End the pipeline's parent run (FINISHED after the last step, FAILED when a step failed); no-op without one."""
    if not tracking.pipeline_run_id:
        return
    with mlflow_errors(tracking.tracking_uri, f"closing the parent run of pipeline run {tracking.pipeline_run_id}"):
        mlflow = _mlflow(tracking.tracking_uri)
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(tracking.experiment)
        if experiment is None:
            return
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{tracking.pipeline_run_id}'")
        for run in runs:
            if not run.data.tags.get("mlflow.parentRunId") and run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status=status)
                log.info("MLflow parent run %s of pipeline run %s: %s", run.info.run_id, tracking.pipeline_run_id, status)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics to the active run (non-finite values are skipped: MLflow rejects NaN on some stores)."""
    import mlflow

    clean = {key: float(value) for key, value in metrics.items() if value is not None and math.isfinite(float(value))}
    if clean:
        mlflow.log_metrics(clean, step=step)


@dataclass
class LoggingReport:
    """What a MetricsBuffer managed to send: a step puts summary() in its final status."""

    logged: int = 0
    unlogged: int = 0
    first_unlogged_step: int | None = None
    last_unlogged_step: int | None = None
    last_error: str = ""

    @property
    def complete(self) -> bool:
        return self.unlogged == 0

    def summary(self) -> str:
        if self.complete:
            return f"all {self.logged} metric values logged to MLflow"
        steps = f" (steps {self.first_unlogged_step}-{self.last_unlogged_step})" if self.first_unlogged_step is not None else ""
        return f"{self.unlogged} metric values were NOT logged to MLflow{steps}, {self.logged} were; last error: {self.last_error}"


class MetricsBuffer:
    """Sends metrics to one MLflow run from a background thread, so a slow or dead server never stalls training.

    log() only queues (with the time of the call); the thread sends batches, and
    while the server fails it keeps them and retries with backoff. close() sends
    what it can within its timeout and returns a LoggingReport of what was not
    logged, instead of failing a training run over its bookkeeping. `run` is the
    run's id, or a Future of it (background_step_run): the thread waits for it, and
    mlflow is imported there too, never in the caller's thread. `open_run`, when
    given, is called once, at the first log() or at close(): what opens that run.
    """

    BATCH = 1000  # MLflow's limit of metrics per log_batch

    def __init__(self, tracking_uri: str, run: str | Future, flush_interval: float = 2.0, max_backoff: float = 60.0,
                 open_run: Callable[[], None] | None = None):
        self._open_run = open_run
        if not isinstance(run, Future):
            run_id, run = run, Future()
            run.set_result(run_id)
        self._run = run
        self._client = None
        self._tracking_uri = tracking_uri
        self._interval = flush_interval
        self._max_backoff = max_backoff
        self._pending: list[tuple[str, float, int, int]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._report = LoggingReport()
        self._thread = threading.Thread(target=self._run_thread, name="mlflow-metrics", daemon=True)
        self._thread.start()

    @property
    def run_id(self) -> str:
        """The run's id (a BertpipeError while it is not open, or when it could not be opened)."""
        if not self._run.done():
            raise BertpipeError(mask(f"MLflow at {self._tracking_uri} has not opened the run yet"))
        return self._run.result()

    def _open_once(self) -> None:
        opener, self._open_run = self._open_run, None
        if opener is not None:
            opener()

    def _raise_if_not_opened(self) -> None:
        if self._run.done() and self._run.exception() is not None:
            raise self._run.exception()

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Queue finite numeric metrics for the run (never blocks on the server); a run that could not be opened fails here."""
        self._open_once()
        self._raise_if_not_opened()
        now = int(time.time() * 1000)
        batch = [(key, float(value), now, step or 0) for key, value in metrics.items() if value is not None and math.isfinite(float(value))]
        with self._lock:
            self._pending.extend(batch)

    def _send_some(self) -> bool:
        """Send one batch; False when the server failed (the batch stays queued)."""
        from mlflow.entities import Metric

        with self._lock:
            batch = self._pending[: self.BATCH]
        if not batch:
            return True
        try:
            with mlflow_errors(self._tracking_uri, "logging metrics"):
                self._client.log_batch(self.run_id, metrics=[Metric(*values) for values in batch], synchronous=True)
        except BertpipeError as error:
            if not self._report.last_error:
                log.warning("%s; metrics are kept and sent when it answers again", error)
            self._report.last_error = str(error)
            return False
        with self._lock:
            del self._pending[: len(batch)]
            self._report.logged += len(batch)
        return True

    def _run_thread(self) -> None:
        if self._run.exception() is not None:  # waits for the run to be open
            return
        from mlflow import MlflowClient

        self._client = MlflowClient(self._tracking_uri)
        delay = self._interval
        while not self._closing.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            while self._pending and not self._closing.is_set():
                if not self._send_some():
                    delay = min(delay * 2, self._max_backoff)
                    break
            else:
                delay = self._interval

    def close(self, timeout: float = 30.0) -> LoggingReport:
        """Stop the thread, send what is left within timeout, and report what could not be logged (a run that
        could not be opened fails here, as in log())."""
        deadline = time.monotonic() + timeout
        self._open_once()
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)
        self._raise_if_not_opened()
        while self._pending and self._client is not None and not self._thread.is_alive() and time.monotonic() < deadline:
            if not self._send_some():
                break
        with self._lock:
            left = list(self._pending)
        report = self._report
        report.unlogged = len(left)
        if left:
            report.first_unlogged_step = min(metric[3] for metric in left)
            report.last_unlogged_step = max(metric[3] for metric in left)
            log.warning("%s", report.summary())
        return report


class _StepFailed(Exception):
    """Raised inside the held step_run so that it ends the run FAILED."""


@contextlib.contextmanager
def background_step_run(tracking: Tracking, step: str, params: dict | None = None, timeout: float = 60.0) -> Iterator[MetricsBuffer]:
    """step_run(strict_close=False) held open by a thread of its own, so the step's work starts at once: importing
    mlflow and opening the run take seconds (3.5 CPU s against a new sqlite store). That thread starts at the first
    metrics logged, not at the start of the block: mlflow's import is Python that holds the GIL, so it does not
    overlap the work, it stretches it; started with the block, it made train-phase's first step 2.5x longer.
    Yields the run's MetricsBuffer; what is logged before the run is open waits in it. A run that cannot be opened
    fails the step at a later log() or at the end of the block. The run ends FINISHED, or FAILED when the block
    raises, in the thread that opened it (MLflow's active run is per thread)."""
    opened: Future = Future()
    finished = threading.Event()
    outcome = {"failed": True}

    def hold() -> None:
        try:
            with step_run(tracking, step, params, strict_close=False) as run_id:
                opened.set_result(run_id)
                finished.wait()
                if outcome["failed"]:
                    raise _StepFailed()
        except _StepFailed:
            pass
        except BaseException as error:  # the run could not be opened (BertpipeError), or mlflow broke closing it
            if not opened.done():
                opened.set_exception(error)
            else:
                log.warning("MLflow run of %s: %s", step, mask(str(error)))

    holder = threading.Thread(target=hold, name="mlflow-run", daemon=True)
    metrics = MetricsBuffer(tracking.tracking_uri, opened, open_run=holder.start)
    try:
        yield metrics
        outcome["failed"] = False
    finally:
        try:
            metrics.close()
        except BertpipeError:
            if not outcome["failed"]:  # never hide the error that failed the block
                raise
        finally:
            finished.set()
            holder.join(timeout)
    if not opened.done():
        log.warning("MLflow at %s did not open the %s run within the step; nothing was logged", mask(tracking.tracking_uri), step)
