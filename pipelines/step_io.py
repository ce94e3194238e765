"""How steps hand big outputs to each other: by URI under an artifact root, named in a small KFP artifact.

KFP's pipeline_root cannot be s3:// under the local runner, so steps write
their real outputs through components.core.storage under
`{artifact_root}/runs/{run id}/{name}` (training, evaluation, reports) or a
content-keyed `{artifact_root}/cache/...` folder (vocab, data; see
components.core.content_key) and put that URI (plus a summary) into the KFP
artifact's metadata and file. The same code then works locally, on a cluster
and against a test S3 server.
"""

from __future__ import annotations

import json
import logging

from components.core import storage
from components.core.console import configure_logging
from components.core.errors import BertpipeError
from components.core.tracking import Tracking

log = logging.getLogger(__name__)


def begin(pipeline_run_id: str, tracking_uri: str, experiment: str, artifact_root: str = "", name: str = "") -> tuple[str, Tracking]:
    """What a component body does before its one library call: the CLI's log format, the folder the step writes in
    this run's folder ("" when it names none), and its MLflow tracking, nested under the pipeline run."""
    configure_logging()
    return (output_uri(artifact_root, pipeline_run_id, name) if name else ""), Tracking(tracking_uri, experiment, pipeline_run_id)


def run_uri(artifact_root: str, pipeline_run_id: str) -> str:
    """The folder of one pipeline run: each run gets its own, so runs never collide."""
    return storage.join(artifact_root, "runs", pipeline_run_id)


def output_uri(artifact_root: str, pipeline_run_id: str, name: str) -> str:
    """Where one step of a pipeline run writes."""
    return storage.join(run_uri(artifact_root, pipeline_run_id), name)


def check_run_exists(artifact_root: str, run_id: str) -> None:
    """Refuse to resume a run whose folder is not under artifact_root (a typo, another artifact root)."""
    if "/" in run_id or run_id in (".", "..") or not storage.list_files(run_uri(artifact_root, run_id)):
        raise BertpipeError(f"no run {run_id!r} to resume under {storage.join(artifact_root, 'runs')}: "
                            "pass the id of an earlier run of this artifact root (a folder name there)")


def resolve_run(artifact_root: str, resume_run_id: str, pipeline_run_id: str) -> str:
    """The run whose folder this pipeline run writes: its own, or the earlier one it resumes (which must exist)."""
    if not resume_run_id:
        return pipeline_run_id
    check_run_exists(artifact_root, resume_run_id)
    log.info("pipeline run %s resumes run %s: finished phases are reused, an unfinished one goes on from its newest checkpoint",
             pipeline_run_id, resume_run_id)
    return resume_run_id


def publish(artifact, uri: str, summary: dict) -> None:
    """Record a step's output URI and summary in its KFP output artifact."""
    artifact.metadata["uri"] = uri
    artifact.metadata.update({key: value for key, value in summary.items() if isinstance(value, (str, int, float, bool))})
    with open(artifact.path, "w", encoding="utf-8") as handle:
        json.dump({"uri": uri, **summary}, handle, indent=2, sort_keys=True, default=str)


def publish_metrics(artifact, metrics: dict[str, float]) -> None:
    """A step's metrics into its KFP Metrics artifact (shown in the KFP UI)."""
    for name, value in metrics.items():
        artifact.log_metric(name, value)


def publish_text(artifact, uri: str) -> None:
    """Copy a text file the step wrote (a report) into its KFP artifact (a Markdown one renders in the KFP UI)."""
    with open(artifact.path, "w", encoding="utf-8") as handle:
        handle.write(storage.read_text(uri))


def uri_of(artifact) -> str:
    """The real location of an upstream step's output."""
    return artifact.metadata["uri"]
