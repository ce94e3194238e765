"""The Markdown report of one pipeline run: evaluation tables, loss curves of both phases, the promotion decision."""

from __future__ import annotations

import logging

from components.core import storage
from components.core.baselines import baseline_key
from components.core.tracking import Tracking, step_run

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"


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
    verdict = {"promoted": "became **champion**", "kept": "stays **challenger**", "conflict": "was **not promoted** (the champion moved meanwhile)"}
    lines = [
        "## Registry",
        "",
        f"Registered as `{registered['model_uri']}`; it {verdict.get(promotion['decision'], promotion['decision'])}"
        + (" (dry run: no alias moved)." if promotion.get("dry_run") else "."),
        f"Champion before: {promotion.get('champion_before') or 'none'}; after: {promotion.get('champion_after') or 'none'}.",
        "",
        "Reasons:",
        "",
    ]
    return lines + [f"- {reason}" for reason in promotion["reasons"]] + [""]


def comparison_section(challenger: dict[str, float], champion_version: str | None, champion: dict[str, float] | None) -> list[str]:
    if not champion:
        return []
    lines = [f"## New model vs champion (version {champion_version}), same test data", "", "| metric | new | champion |", "|---|---|---|"]
    lines += [f"| {name} | {challenger[name]:.4f} | {champion[name]:.4f} |" for name in sorted(challenger) if name in champion]
    return lines + [""]


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
    return text
