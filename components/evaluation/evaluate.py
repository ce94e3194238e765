"""The evaluate step: MLM and NSP metrics of a model on held-out instances, per sequence length, and of the champion.

Metric keys are `<name>_<max_seq_length>` (e.g. "mlm_accuracy_128"; the names are
components.core.scoring.METRIC_NAMES). Given a registered model name, the step
also evaluates that model's current champion on the very same instances:
registered metrics of an older champion were measured on an older test split, and
only numbers from the same instances (fixed masks, same documents) can decide a
promotion by a small margin. metrics.json holds both; the register step reads it.
Beside each trivial baseline (components.core.baselines) it holds a paired bootstrap
interval of model minus trivial guess on the same rows: a floor must not pass on noise.
"""

from __future__ import annotations

import contextlib
import logging

from components.core import batches as batching
from components.core import instances as instance_format
from components.core import models
from components.core import storage
from components.core.baselines import BASELINE_OF, baseline_rates, trivial_guesses
from components.core.errors import BertpipeError
from components.core.metric_names import EVALUATION_METRICS_FILE, EVALUATION_REPORT_FILE, HIGHER_IS_BETTER
from components.core.model_store import current_champion, model_folder
from components.core.scoring import evaluation_device, metrics_from, score_instances
from components.core.settings import as_dict, check
from components.core.tracking import Tracking, default_tracking_uri, log_metrics, step_run
from components.core.vocab_files import MASK_TOKEN, load_vocab_info
from components.evaluation import instance_results
from components.evaluation.report import fill_mask_examples, render_report
from components.evaluation.settings import EvaluationSettings

log = logging.getLogger(__name__)

STEP_NAME = "evaluate"


def measure(model_uri: str, data_uris: dict[int, str], settings: EvaluationSettings, tracking_uri: str) -> tuple[dict, dict, dict, dict]:
    """(metrics, fill-mask examples, per-instance results, per-instance trivial guesses on the same rows; each per length)
    of one model on `settings.split` of each data folder."""
    device = evaluation_device()
    with model_folder(model_uri, tracking_uri) as folder:
        if not (folder / "vocab_info.json").is_file():
            raise BertpipeError(f"{model_uri} has no vocab_info.json; evaluate a model folder written by train-phase")
        model = models.load_model(str(folder))
        vocab_info = load_vocab_info(str(folder))
        tokens = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    models.check_vocab_size(model, vocab_info["size"], model_uri)
    forward = models.MaskedPretrainingModel(model).to(device)
    mask_id = tokens.index(MASK_TOKEN)
    split = settings.split
    results, examples, instances, trivial = {}, {}, {}, {}
    for length, data_uri in data_uris.items():
        manifest = instance_format.read_manifest(data_uri)
        instance_format.check_compatible(manifest, data_uri, max_seq_length=length, vocab_sha256=vocab_info["sha256"])
        if not manifest["splits"].get(split, {}).get("num_instances"):
            raise BertpipeError(f"{data_uri} has no {split!r} instances to evaluate on; create the data with held-out documents")
        if length > model.config.max_position_embeddings:
            raise BertpipeError(f"{data_uri} has {length}-token sequences; the model takes at most {model.config.max_position_embeddings}")
        log.info("evaluating %s on the %s split of %s (%s)", model_uri, split, data_uri, device)
        batches = batching.evaluation_batches(data_uri, manifest, split, settings.per_device_eval_batch_size, settings.max_eval_batches or None)
        instances[length] = score_instances(forward, batches, device, mask_id)
        trivial[length] = trivial_guesses(data_uri, manifest, split, mask_id, rows=len(instances[length]["nsp_hit"]))
        results[length] = {**metrics_from(instances[length]), **baseline_rates(trivial[length])}
        examples[length] = fill_mask_examples(forward, data_uri, manifest, split, tokens, device)
        log.info("length %d: %s", length, ", ".join(f"{k}={v:.4f}" for k, v in results[length].items()))
    return results, examples, instances, trivial


def flatten(results: dict[int, dict]) -> dict[str, float]:
    return {f"{name}_{length}": value for length, metrics in results.items() for name, value in metrics.items()}


def evaluate_champion(registered_model_name: str, data_uris: dict[int, str], settings: EvaluationSettings, tracking_uri: str) -> tuple[dict, dict | None]:
    """({"registered_model_name", "version", "metrics", "note"}, per-instance results or None): the champion on this data.

    version None: no champion yet. metrics None with a version: the champion cannot
    read this data (another vocab, say); promotion then falls back to its
    registered metrics and says so.
    """
    champion = {"registered_model_name": registered_model_name, "version": None, "metrics": None, "note": ""}
    version = current_champion(registered_model_name, tracking_uri=tracking_uri)
    if version is None:
        champion["note"] = f"{registered_model_name} has no champion yet: the new version is compared with the trivial baselines and the promotion floor only."
        log.info("%s", champion["note"])
        return champion, None
    champion["version"] = version
    log.info("evaluating champion %s version %s on the same data", registered_model_name, version)
    try:
        results, _, instances, _ = measure(f"models:/{registered_model_name}/{version}", data_uris, settings, tracking_uri)
        champion["metrics"] = flatten(results)
        return champion, instances
    except BertpipeError as error:
        champion["note"] = f"Champion version {version} cannot be evaluated on this data ({error}); its registered metrics will be used."
        log.warning("%s", champion["note"])
    return champion, None


def _paired_intervals(instances: dict, other: dict, metrics, settings: EvaluationSettings, against: str) -> dict:
    """Paired bootstrap intervals of new model minus `other` (per-instance columns per length) per metric and length;
    a metric counted over no units (no [MASK] positions, say) has none."""
    intervals = {
        f"{metric}_{length}": instance_results.compare(instances[length], other[length], metric, level=settings.confidence_level,
                                                       resamples=settings.bootstrap_resamples, seed=settings.bootstrap_seed).as_dict()
        for length in instances for metric in metrics if instance_results.has_units(instances[length], metric)
    }
    for name, interval in intervals.items():
        log.info("%s, new model minus %s: %+.4f [%+.4f, %+.4f] at %.0f%% (%d instances)", name, against, interval["difference"], interval["low"],
                 interval["high"], 100 * interval["level"], interval["instances"])
    return intervals


def compare_with_champion(instances: dict, champion_instances: dict, settings: EvaluationSettings) -> dict:
    """Paired bootstrap intervals of new model minus champion, per higher-is-better metric and length."""
    return _paired_intervals(instances, champion_instances, HIGHER_IS_BETTER, settings, "champion")


def compare_with_baselines(instances: dict, trivial: dict, settings: EvaluationSettings) -> dict:
    """Paired bootstrap intervals of new model minus its trivial baseline, per metric that has one (BASELINE_OF) and length."""
    return _paired_intervals(instances, trivial, BASELINE_OF, settings, "trivial baseline")


def evaluate(
    model_uri: str,
    data_uris: dict,
    output_uri: str,
    *,
    registered_model_name: str = "",
    settings: EvaluationSettings = EvaluationSettings(),
    tracking: Tracking | None = None,
) -> dict:
    """Evaluate the model (a folder, s3:// URI or models:/ URI) on each data folder (keyed by max_seq_length),
    and the current champion of `registered_model_name` (when given) on the same instances.

    Writes metrics.json and report.md to output_uri and returns what metrics.json
    holds: {"model_uri", "split", "data": {"128": {"uri", "manifest_sha256"}, ...},
    "metrics": {"mlm_accuracy_128": ...}, "champion": None or
    {"registered_model_name", "version", "metrics", "note"}, "intervals": {metric: new minus champion},
    "baseline_intervals": {metric: new minus trivial baseline}} (intervals as bootstrap.Interval.as_dict).
    """
    check(settings, STEP_NAME)
    storage.check_output(output_uri)
    data_uris = instance_format.data_folders(data_uris)
    tracking_uri = tracking.tracking_uri if tracking else default_tracking_uri()
    params = {"model_uri": model_uri, "registered_model_name": registered_model_name, **as_dict(settings)}
    params.update({f"data_uri_{length}": uri for length, uri in data_uris.items()})
    with step_run(tracking, STEP_NAME, params) if tracking else contextlib.nullcontext():
        results, examples, instances, trivial = measure(model_uri, data_uris, settings, tracking_uri)
        flat = flatten(results)
        champion, champion_instances = evaluate_champion(registered_model_name, data_uris, settings, tracking_uri) if registered_model_name else (None, None)
        # Which data the numbers are from: the register step checks it was given the same.
        data = {str(length): {"uri": uri, "manifest_sha256": instance_format.manifest_sha256(uri)} for length, uri in data_uris.items()}
        for length, columns in instances.items():
            test_data = f"{data[str(length)]['manifest_sha256']}:{settings.split}"
            instance_results.save(storage.join(output_uri, instance_results.results_file(length)), columns, test_data)
            if champion_instances:
                instance_results.save(storage.join(output_uri, "champion", instance_results.results_file(length)), champion_instances[length], test_data)
        intervals = compare_with_champion(instances, champion_instances, settings) if champion_instances else {}
        record = {"model_uri": model_uri, "split": settings.split, "data": data, "metrics": flat, "champion": champion, "intervals": intervals,
                  "baseline_intervals": compare_with_baselines(instances, trivial, settings)}
        report = render_report(model_uri, settings.split, results, examples, flat, champion)
        storage.write_json(storage.join(output_uri, EVALUATION_METRICS_FILE), record)
        storage.write_text(storage.join(output_uri, EVALUATION_REPORT_FILE), report)
        if tracking:
            _log_to_mlflow(settings.split, flat, champion, report)
    log.info("evaluation written to %s", output_uri)
    return record


def _log_to_mlflow(split: str, flat: dict[str, float], champion: dict | None, report: str) -> None:
    import mlflow

    # MLflow's names read <split>_<length>_<metric>, e.g. test_128_mlm_accuracy.
    def names(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{split}_{key.rsplit('_', 1)[1]}_{key.rsplit('_', 1)[0]}": value for key, value in metrics.items()}

    log_metrics(names(flat))
    if champion and champion["metrics"]:
        log_metrics(names(champion["metrics"], "champion_"))
        mlflow.set_tag("bertpipe.champion_version", champion["version"])
    mlflow.log_text(report, EVALUATION_REPORT_FILE)
