"""The Markdown report of one pipeline run: the promotion decision, the loss curves of the phases, the evaluation."""

from __future__ import annotations

import logging

from components.core import storage
<<<<<<< HEAD
from components.core.baselines import baseline_key
from components.core.tracking import Tracking, step_run
=======
from components.core.scoring import EVALUATION_REPORT_FILE
>>>>>>> main

log = logging.getLogger(__name__)

VERDICTS = {"promoted": "became **champion**", "kept": "stays **challenger**", "conflict": "was **not promoted**: the champion moved meanwhile (a conflict)"}


LENGTHS = (128, 512)
HEADLINE_METRICS = ("mlm_accuracy", "nsp_accuracy", "mlm_top5_accuracy", "perplexity")


def _read_json(uri: str) -> dict:
    return storage.read_json(uri) if storage.exists(uri) else {}


def _cell(metrics: dict, name: str) -> str:
    value, trivial = metrics.get(name), metrics.get(baseline_key(name) or "")
    if value is None:
        return "–"
    text = f"{value:.4f}" if value < 10 else f"{value:.1f}"
    return f"{text} (trivial {trivial:.4f})" if trivial is not None else text


def summary_section(run_uri: str, challenger: dict, registered: dict) -> list[str]:
    """The table a reader wants first: data, model, both phases, test metrics beside trivial baselines, the decision."""
    manifests = {length: _read_json(storage.join(run_uri, f"data-{length}", "manifest.json")) for length in LENGTHS}
    phases = {length: _read_json(storage.join(run_uri, f"phase-{length}", "training_summary.json")) for length in LENGTHS}
    first = manifests[LENGTHS[0]]
    splits = first.get("splits", {})
    data = f"corpus `{first.get('corpus', '?')}`, {first.get('vocab_size', '?')}-token vocab; " + ", ".join(
        f"{length}: " + " / ".join(f"{manifests[length].get('splits', {}).get(split, {}).get('num_instances', 0):,}" for split in ("train", "dev", "test"))
        for length in LENGTHS) + " train / dev / test instances"
    if splits:
        data += f" ({splits.get('test', {}).get('num_documents', 0):,} held-out test documents)"
    last = phases[LENGTHS[-1]]
    shape = last.get("model_shape", {})
    model = (f"`{last.get('settings', {}).get('model_size') or '?'}`: {shape.get('num_hidden_layers', '?')} layers, hidden {shape.get('hidden_size', '?')}, "
             f"{last.get('num_parameters', 0) / 1e6:.2f}M parameters")
    promotion = registered["promotion"]
    rows = [("data", data), ("model", model)]
    for length, phase in phases.items():
        loss = phase.get("final_loss")
        rows.append((f"phase {length}", f"{phase.get('steps', '?')} steps, batch {phase.get('global_batch_size', '?')}, {phase.get('train_seconds', 0):.0f} s"
                     + (f", final loss {loss:.3f}" if loss is not None else "")))
    for length in LENGTHS:
        rows.append((f"test at {length}", ", ".join(f"{name} {_cell(challenger, f'{name}_{length}')}" for name in HEADLINE_METRICS)))
    rows.append(("promotion", f"**{promotion['decision']}** {registered['model_uri']}: " + "; ".join(promotion["reasons"])))
    return ["| | |", "|---|---|", *(f"| {label} | {text} |" for label, text in rows), "",
            "Trivial baselines: always guessing the test split's most frequent masked token, and its majority NSP class.", ""]


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


<<<<<<< HEAD
def write_run_report(run_uri: str, evaluation_uri: str, challenger: dict, champion_version: str | None, champion: dict | None, registered: dict,
                     tracking: Tracking | None = None) -> str:
    """Write `{run_uri}/report.md` and return its text; images are linked relative to the run folder.

    With `tracking`, the report and its loss curves also go to MLflow, in a "report" run under the pipeline's run.
    """
    evaluation = storage.read_text(storage.join(evaluation_uri, REPORT_FILE)).splitlines()
    curves = ["## Loss curves", ""] + [f"![phase {length}](phase-{length}/plots/loss_curve.png)" for length in (128, 512)] + [""]
    text = "\n".join(["# bert-pretraining run", ""] + summary_section(run_uri, challenger, registered) + promotion_section(registered) + comparison_section(challenger, champion_version, champion)
                     + curves + evaluation[1:]) + "\n"
    storage.write_text(storage.join(run_uri, REPORT_FILE), text)
    if tracking:
        import mlflow

        with step_run(tracking, "report", strict_close=False):
            mlflow.log_text(text, REPORT_FILE)
            for length in LENGTHS:
                curve = storage.join(run_uri, f"phase-{length}", "plots")
                if storage.exists(storage.join(curve, "loss_curve.png")):
                    with storage.local_dir(curve) as folder:
                        mlflow.log_artifact(str(folder / "loss_curve.png"), f"phase-{length}/plots")
    log.info("run report written to %s", storage.join(run_uri, REPORT_FILE))
=======
def _link(report_uri: str, target: str) -> str:
    """target relative to the report's folder when it lies below it (so the report reads anywhere it is copied), else as is."""
    folder = report_uri.rsplit("/", 1)[0] + "/"
    return target[len(folder):] if target.startswith(folder) else target


def write_run_report(report_uri: str, evaluation_uri: str, registered: dict, phases: list[dict]) -> str:
    """Write the run report to report_uri and return its text; `phases` are the training summaries, first phase first."""
    evaluation = storage.read_text(storage.join(evaluation_uri, EVALUATION_REPORT_FILE)).splitlines()
    curves = ["## Loss curves", ""]
    curves += [f"![phase {phase['max_seq_length']}]({_link(report_uri, storage.join(phase['output_uri'], 'plots', 'loss_curve.png'))})" for phase in phases]
    text = "\n".join(["# bert-pretraining run", ""] + promotion_section(registered) + curves + [""] + evaluation[1:]) + "\n"
    storage.write_text(report_uri, text)
    log.info("run report written to %s", report_uri)
>>>>>>> main
    return text
