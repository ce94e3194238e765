"""The Markdown report of one pipeline run: the promotion decision, the loss curves of the phases, the evaluation."""

from __future__ import annotations

import logging

from components.core import storage
from components.core.baselines import baseline_key
from components.core.metric_names import EVALUATION_METRICS_FILE, EVALUATION_REPORT_FILE
from components.core.tracking import Tracking, step_run

log = logging.getLogger(__name__)

VERDICTS = {"promoted": "became **champion**", "kept": "stays **challenger**", "conflict": "was **not promoted**: the champion moved meanwhile (a conflict)"}


LENGTHS = (128, 512)
HEADLINE_METRICS = ("mlm_accuracy_at_mask", "mlm_accuracy", "nsp_accuracy", "mlm_top5_accuracy", "perplexity")


def _read_json(uri: str) -> dict:
    return storage.read_json(uri) if storage.exists(uri) else {}


def _cell(metrics: dict, name: str) -> str:
    value, trivial = metrics.get(name), metrics.get(baseline_key(name) or "")
    if value is None:
        return "–"
    text = f"{value:.4f}" if value < 10 else f"{value:.1f}"
    return f"{text} (trivial {trivial:.4f})" if trivial is not None else text


def _origin(first_phase: dict) -> str:
    """Where the model came from: the first phase's init checkpoint, or the preset it was built from (model_size is
    ignored when a phase starts from a checkpoint, so naming it there would mislabel the model)."""
    settings = first_phase.get("settings", {})
    if settings.get("init_model"):
        return f"continued from `{settings['init_model']}`"
    return f"`{settings.get('model_size') or '?'}` preset, from scratch"


def summary_section(metrics: dict, registered: dict, phases: list[dict]) -> list[str]:
    """The table a reader wants first: data, model, both phases, test metrics beside trivial baselines, the decision."""
    manifests = [_read_json(storage.join(phase.get("settings", {}).get("data_uri", ""), "manifest.json")) if phase.get("settings", {}).get("data_uri") else {}
                 for phase in phases]
    first = manifests[0] if manifests else {}
    data = f"corpus `{first.get('corpus', '?')}`, {first.get('vocab_size', '?')}-token vocab; " + ", ".join(
        f"{phase.get('max_seq_length')}: " + " / ".join(f"{manifest.get('splits', {}).get(split, {}).get('num_instances', 0):,}" for split in ("train", "dev", "test"))
        for phase, manifest in zip(phases, manifests)) + " train / dev / test instances"
    last = phases[-1] if phases else {}
    shape = last.get("model_shape", {})
    model = (f"{_origin(phases[0] if phases else {})}: {shape.get('num_hidden_layers', '?')} layers, hidden {shape.get('hidden_size', '?')}, "
             f"{last.get('num_parameters', 0) / 1e6:.2f}M parameters")
    promotion = registered["promotion"]
    rows = [("data", data), ("model", model)]
    for phase in phases:
        loss = phase.get("final_loss")
        rows.append((f"phase {phase.get('max_seq_length')}", f"{phase.get('steps', '?')} steps, batch {phase.get('global_batch_size', '?')}, {phase.get('train_seconds', 0):.0f} s"
                     + (f", final loss {loss:.3f}" if loss is not None else "")))
    for length in LENGTHS:
        rows.append((f"test at {length}", ", ".join(f"{name} {_cell(metrics, f'{name}_{length}')}" for name in HEADLINE_METRICS)))
    rows.append(("promotion", f"**{promotion['decision']}**: " + "; ".join(promotion["reasons"])))
    return ["| | |", "|---|---|", *(f"| {label} | {text} |" for label, text in rows), "",
            "mlm_accuracy_at_mask counts only the masked positions the model saw as [MASK] (80% of them); mlm_accuracy counts all, "
            "including the 10% BERT leaves unchanged, which a model can copy from its input. Trivial baselines: always guessing "
            "the test split's most frequent token at those positions, and its majority NSP class.", ""]


def promotion_section(registered: dict) -> list[str]:
    promotion = registered["promotion"]
    lines = [
        "## Registry",
        "",
        f"Registered as `{registered['model_uri']}`; it {VERDICTS.get(promotion['decision'], promotion['decision'])}"
        + (" (dry run: no alias moved)." if promotion.get("dry_run") else "."),
        f"Champion before: {promotion.get('champion_before') or 'none'}; after: {promotion.get('champion_after') or 'none'}.",
        "",
        "Reasons:",
        "",
    ]
    lines += [f"- {reason}" for reason in promotion["reasons"]]
    if promotion["decision"] == "conflict":
        lines += ["", f"Nothing moved. Evaluate again against the new champion, or promote by hand: "
                      f"`bertpipe promote {registered['name']} {registered['version']} --reason ...`."]
    return lines + [""]


def _link(report_uri: str, target: str) -> str:
    """target relative to the report's folder when it lies below it (so the report reads anywhere it is copied), else as is."""
    folder = report_uri.rsplit("/", 1)[0] + "/"
    return target[len(folder):] if target.startswith(folder) else target


def write_run_report(report_uri: str, evaluation_uri: str, registered: dict, phases: list[dict], extra: list[str] = (),
                     tracking: Tracking | None = None) -> str:
    """Write the run report to report_uri and return its text; `phases` are the training summaries, first phase first;
    `extra` lines follow the promotion section (the intervals and the probe). With `tracking`, the report and the
    loss curves also go to MLflow, in a "report" run under the pipeline's run."""
    evaluation = storage.read_text(storage.join(evaluation_uri, EVALUATION_REPORT_FILE)).splitlines()
    curves = ["## Loss curves", ""]
    curves += [f"![phase {phase['max_seq_length']}]({_link(report_uri, storage.join(phase['output_uri'], 'plots', 'loss_curve.png'))})" for phase in phases]
    metrics = _read_json(storage.join(evaluation_uri, EVALUATION_METRICS_FILE)).get("metrics", {})
    text = "\n".join(["# bert-pretraining run", ""] + summary_section(metrics, registered, phases) + promotion_section(registered) + list(extra)
                     + curves + [""] + evaluation[1:]) + "\n"
    storage.write_text(report_uri, text)
    log.info("run report written to %s", report_uri)
    if tracking:
        _log_to_mlflow(text, phases, tracking)
    return text


def _log_to_mlflow(text: str, phases: list[dict], tracking: Tracking) -> None:
    import mlflow

    with step_run(tracking, "report", strict_close=False):
        mlflow.log_text(text, "report.md")
        for phase in phases:
            plots = storage.join(phase["output_uri"], "plots")
            if storage.exists(storage.join(plots, "loss_curve.png")):
                with storage.local_dir(plots) as folder:
                    mlflow.log_artifact(str(folder / "loss_curve.png"), f"phase-{phase['max_seq_length']}/plots")
