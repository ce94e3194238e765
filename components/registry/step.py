"""The register-and-promote step, the pipeline's last: register the trained model, let it challenge the champion, report.

Everything it records is read from what the earlier steps wrote, not from pipeline
literals: the evaluation's metrics.json (the new model's metrics and the champion's
on the same instances), the data manifests' hashes, and the training summaries
beside the model (steps and sequence length of each phase, walked back from the
last phase through `init_model`).
"""

from __future__ import annotations

import logging

from components.core import instances as instance_format
from components.core import storage
from components.core.errors import BertpipeError
from components.core.scoring import EVALUATION_METRICS_FILE
from components.core.settings import check
from components.core.tracking import Tracking, close_pipeline_run
from components.registry.promotion import PromotionSettings, promote_if_better
from components.registry.register import register_model
from components.registry.run_report import write_run_report

log = logging.getLogger(__name__)

STEP_NAME = "register"
RUN_REPORT_FILE = "report.md"
TRAINING_SUMMARY_FILE = "training_summary.json"
MAX_PHASES = 8  # a guard against an init_model chain that loops


def parent(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0]


def training_phases(model_uri: str) -> list[dict]:
    """The training summaries of the phases that made model_uri, first phase first: {"output_uri", "max_seq_length", "steps"}.

    A phase writes `<output>/model` and `<output>/training_summary.json`; its
    settings name the model it started from. Empty for a folder not written by train-phase.
    """
    phases, uri = [], model_uri
    while uri and not uri.startswith("models:/") and len(phases) < MAX_PHASES:
        summary_uri = storage.join(parent(uri), TRAINING_SUMMARY_FILE)
        if not storage.exists(summary_uri):
            break
        summary = storage.read_json(summary_uri)
        phases.append({"output_uri": parent(uri), "max_seq_length": summary["max_seq_length"], "steps": summary["steps"]})
        uri = summary.get("settings", {}).get("init_model", "")
    return phases[::-1]


def traceability_tags(data: dict[int, str], phases: list[dict]) -> dict[str, str]:
    tags = {f"bertpipe.data_{length}_manifest_sha256": instance_format.manifest_sha256(uri) for length, uri in data.items()}
    for number, phase in enumerate(phases, start=1):
        tags[f"bertpipe.phase{number}_steps"] = str(phase["steps"])
        tags[f"bertpipe.phase{number}_max_seq_length"] = str(phase["max_seq_length"])
    return tags


def read_evaluation(evaluation_uri: str, data: dict[int, str], registered_model_name: str) -> dict:
    """The evaluate step's metrics.json, checked to be about this data and this registered model."""
    evaluation = storage.read_json(storage.join(evaluation_uri, EVALUATION_METRICS_FILE))
    for length, uri in data.items():
        measured = evaluation.get("data", {}).get(str(length))
        if measured is None or measured["manifest_sha256"] != instance_format.manifest_sha256(uri):
            raise BertpipeError(f"the evaluation in {evaluation_uri} was not measured on {uri} (max_seq_length {length}); evaluate on the data you register with")
    champion = evaluation.get("champion")
    if champion and champion["registered_model_name"] != registered_model_name:
        raise BertpipeError(f"the evaluation in {evaluation_uri} compared with the champion of {champion['registered_model_name']!r}, not {registered_model_name!r}; "
                            "evaluate with the same --registered-model-name")
    return evaluation


def register_and_promote(
    model_uri: str,
    evaluation_uri: str,
    data_uris: dict,
    *,
    registered_model_name: str,
    settings: PromotionSettings = PromotionSettings(),
    tracking: Tracking | None = None,
    report_uri: str = "",
    actor: str | None = None,
) -> dict:
    """Register model_uri as a new version of registered_model_name with its traceability tags, let it challenge
    the champion (metrics from evaluation_uri), and write the run report (default: report.md beside the
    evaluation folder). In a pipeline run, it then closes the pipeline's MLflow run.

    Returns {"name", "version", "model_uri", "run_id", "report_uri", "promotion": {"decision": "promoted" |
    "kept" | "conflict", "reasons", "champion_before", "champion_after", ...}}.
    """
    check(settings, STEP_NAME)
    tracking = tracking or Tracking()
    data = instance_format.data_folders(data_uris)
    evaluation = read_evaluation(evaluation_uri, data, registered_model_name)
    phases = training_phases(model_uri)
    champion = evaluation.get("champion") or {}
    registered = register_model(model_uri, registered_model_name, tracking=tracking, tags=traceability_tags(data, phases), metrics=evaluation["metrics"])
    decision = promote_if_better(
        registered_model_name, registered["version"], tracking_uri=tracking.tracking_uri, challenger_metrics=evaluation["metrics"],
        champion_version=champion.get("version"), champion_metrics=champion.get("metrics"), policy=settings.policy,
        dry_run=settings.promotion_dry_run, actor=actor,
    )
    result = {**registered, "promotion": decision, "report_uri": report_uri or storage.join(parent(evaluation_uri), RUN_REPORT_FILE)}
    write_run_report(result["report_uri"], evaluation_uri, result, phases)
    try:
        close_pipeline_run(tracking)
    except BertpipeError as error:  # the version is registered and decided: bookkeeping must not fail the step now
        log.warning("%s; the pipeline's parent run stays RUNNING in MLflow", error)
    return result
