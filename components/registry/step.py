"""The register-and-promote step, the pipeline's last: register the trained model, let it challenge the champion, report.

Everything it records is read from what the earlier steps wrote, not from pipeline
literals: the evaluation's metrics.json (the new model's metrics and the champion's
on the same instances), the data manifests' hashes, and the training summaries
beside the model (steps and sequence length of each phase, walked back from the
last phase through `init_model`).
"""

from __future__ import annotations

import logging
import os

from components.core import instances as instance_format
from components.core import storage
from components.core.errors import BertpipeError
from components.core.metric_names import EVALUATION_METRICS_FILE, PROBE_FILE
from components.core.settings import check
from components.core.tracking import Tracking, close_pipeline_run
from components.registry.model_card import MODEL_CARD_FILE, description, evaluation_interval_lines, probe_lines, render_model_card
from components.registry.promotion import pipeline_actor, promote_if_better
from components.registry.register import register_model
from components.registry.run_report import write_run_report
from components.registry.settings import PromotionSettings

log = logging.getLogger(__name__)

STEP_NAME = "register"
RUN_REPORT_FILE = "report.md"
TRAINING_SUMMARY_FILE = "training_summary.json"
MAX_PHASES = 8  # a guard against an init_model chain that loops


def parent(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0]


def training_phases(model_uri: str) -> list[dict]:
    """The training summaries of the phases that made model_uri, first phase first (without their step history),
    each with its "output_uri".

    A phase writes `<output>/model` and `<output>/training_summary.json`; its
    settings name the model it started from. Empty for a folder not written by train-phase.
    """
    phases, uri = [], model_uri
    while uri and not uri.startswith("models:/") and len(phases) < MAX_PHASES:
        summary_uri = storage.join(parent(uri), TRAINING_SUMMARY_FILE)
        if not storage.exists(summary_uri):
            break
        summary = storage.read_json(summary_uri)
        phases.append({**{key: value for key, value in summary.items() if key != "history"}, "output_uri": parent(uri)})
        uri = summary.get("settings", {}).get("init_model", "")
    return phases[::-1]


def traceability_tags(data: dict[int, str], phases: list[dict]) -> dict[str, str]:
    tags = {f"bertpipe.data_{length}_manifest_sha256": instance_format.manifest_sha256(uri) for length, uri in data.items()}
    for number, phase in enumerate(phases, start=1):
        tags[f"bertpipe.phase{number}_steps"] = str(phase["steps"])
        tags[f"bertpipe.phase{number}_max_seq_length"] = str(phase["max_seq_length"])
    return tags


def comparison_tags(evaluation: dict, probe: dict | None) -> dict[str, str]:
    """The intervals and probe scores as version tags: `bertpipe.interval.<metric>` (new minus champion) and
    `bertpipe.baseline_interval.<metric>` (new minus trivial baseline) = "diff [low, high] level instances units"."""
    tags = {f"bertpipe.{kind}.{name}": f"{i['difference']:+.6f} [{i['low']:+.6f}, {i['high']:+.6f}] level {i['level']} instances {i['instances']} units {i['units']}"
            for kind, key in (("interval", "intervals"), ("baseline_interval", "baseline_intervals")) for name, i in (evaluation.get(key) or {}).items()}
    if probe and probe.get("challenger"):
        tags.update({"bertpipe.probe.dataset": probe["dataset"], "bertpipe.probe.accuracy": repr(probe["challenger"]["accuracy"]),
                     "bertpipe.probe.macro_f1": repr(probe["challenger"]["macro_f1"])})
    return tags


def publish_model_card(card: str, registered: dict, model_uri: str, tracking: Tracking) -> str:
    """The card as the version's description, an artifact of the registration run, and a file beside the model; returns the file's URI."""
    from components.core.model_store import registry_client
    from components.core.tracking import mlflow_errors

    with mlflow_errors(tracking.tracking_uri, f"writing the model card of {registered['model_uri']}"):
        client = registry_client(tracking.tracking_uri)
        client.update_model_version(registered["name"], registered["version"], description=description(card))
        client.log_text(registered["run_id"], card, MODEL_CARD_FILE)
    uri = storage.join(parent(model_uri), MODEL_CARD_FILE) if not model_uri.startswith("models:/") else ""
    if uri:
        storage.write_text(uri, card)
    return uri


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
    probe_uri: str = "",
) -> dict:
    """Register model_uri as a new version of registered_model_name with its traceability tags, let it challenge
    the champion (metrics from evaluation_uri), and write the run report (default: report.md beside the
    evaluation folder). `probe_uri`: the probe step's folder (probe.json), for the policy and the model card.
    The version's model card becomes its description and model_card.md (run artifacts, beside the model).
    In a pipeline run, it then closes the pipeline's MLflow run.

    Returns {"name", "version", "model_uri", "run_id", "report_uri", "promotion": {"decision": "promoted" |
    "kept" | "conflict", "reasons", "champion_before", "champion_after", ...}}.
    """
    check(settings, STEP_NAME)
    report_uri = report_uri or storage.join(parent(evaluation_uri), RUN_REPORT_FILE)
    storage.check_output(os.path.dirname(report_uri) or ".", "the folder of --report-uri")  # before a version is registered
    tracking = tracking or Tracking()
    data = instance_format.data_folders(data_uris)
    evaluation = read_evaluation(evaluation_uri, data, registered_model_name)
    phases = training_phases(model_uri)
    champion = evaluation.get("champion") or {}
    probe = storage.read_json(storage.join(probe_uri, PROBE_FILE)) if probe_uri else None
    tags = {**traceability_tags(data, phases), **comparison_tags(evaluation, probe)}
    registered = register_model(model_uri, registered_model_name, tracking=tracking, tags=tags, metrics=evaluation["metrics"])
    decision = promote_if_better(
        registered_model_name, registered["version"], tracking_uri=tracking.tracking_uri, challenger_metrics=evaluation["metrics"],
        champion_version=champion.get("version"), champion_metrics=champion.get("metrics"), policy=settings.policy,
        dry_run=settings.promotion_dry_run, actor=actor or pipeline_actor(tracking.pipeline_run_id), pipeline_run=tracking.pipeline_run_id or "",
        intervals=evaluation.get("intervals"), probe=probe, baseline_intervals=evaluation.get("baseline_intervals"),
    )
    result = {**registered, "promotion": decision, "report_uri": report_uri}
    result["model_card_uri"] = publish_model_card(render_model_card(result, evaluation, probe, phases, tracking.pipeline_run_id), result, model_uri, tracking)
    write_run_report(result["report_uri"], evaluation_uri, result, phases, extra=evaluation_interval_lines(evaluation) + probe_lines(probe),
                     tracking=tracking)
    try:
        close_pipeline_run(tracking)
    except BertpipeError as error:  # the version is registered and decided: bookkeeping must not fail the step now
        log.warning("%s; the pipeline's parent run stays RUNNING in MLflow", error)
    return result
