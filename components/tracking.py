"""MLflow bookkeeping shared by every step: one parent run per pipeline run, one nested run per step.

Steps run in separate processes (pods, or kfp.local subprocesses), so they meet
through a tag: the parent run is the one tagged with the pipeline run's id. The
DAG starts with a single step (export-vocab), which creates it; later steps find it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Iterator

from components.errors import BertpipeError

log = logging.getLogger(__name__)

PIPELINE_RUN_TAG = "bertpipe.pipeline_run_id"
STEP_TAG = "bertpipe.step"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "bert-pretraining"


@dataclass(frozen=True)
class Tracking:
    """Where a step logs: the MLflow server or store, the experiment, and the pipeline run it belongs to."""

    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str = DEFAULT_EXPERIMENT
    pipeline_run_id: str = ""


@contextlib.contextmanager
def mlflow_errors(tracking_uri: str, action: str):
    """Report an unreachable or refusing MLflow as one line that names the server."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException

    try:
        yield
    except (MlflowException, RequestException, ConnectionError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BertpipeError(f"MLflow at {tracking_uri} failed while {action}: {first_line[:300]}") from error


def _parent_run_id(client, experiment_id: str, pipeline_run_id: str) -> str:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}'", order_by=["attributes.start_time ASC"], max_results=1
    )
    if runs:
        return runs[0].info.run_id
    run = client.create_run(experiment_id, run_name=f"pipeline-{pipeline_run_id[:24]}", tags={PIPELINE_RUN_TAG: pipeline_run_id})
    log.info("created MLflow parent run %s for pipeline run %s", run.info.run_id, pipeline_run_id)
    return run.info.run_id


@contextlib.contextmanager
def step_run(tracking: Tracking, step: str, params: dict | None = None) -> Iterator[str]:
    """Start the MLflow run of one step (nested under the pipeline's run) and yield its run id."""
    import mlflow

    with mlflow_errors(tracking.tracking_uri, f"starting the {step} run"):
        mlflow.set_tracking_uri(tracking.tracking_uri)
        experiment = mlflow.set_experiment(tracking.experiment)
        tags = {STEP_TAG: step}
        parent_id = None
        if tracking.pipeline_run_id:
            tags[PIPELINE_RUN_TAG] = tracking.pipeline_run_id
            parent_id = _parent_run_id(mlflow.MlflowClient(), experiment.experiment_id, tracking.pipeline_run_id)
        run = mlflow.start_run(run_name=step, parent_run_id=parent_id, tags=tags)
        if params:
            mlflow.log_params({key: str(value)[:6000] for key, value in params.items()})
    status = "FAILED"
    try:
        yield run.info.run_id
        status = "FINISHED"
    finally:
        with mlflow_errors(tracking.tracking_uri, f"closing the {step} run"):
            mlflow.end_run(status=status)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log numeric metrics to the active run (non-finite values are skipped: MLflow rejects NaN on some stores)."""
    import math

    import mlflow

    clean = {key: float(value) for key, value in metrics.items() if value is not None and math.isfinite(float(value))}
    if clean:
        mlflow.log_metrics(clean, step=step)
