"""The Markdown report of one pipeline run: evaluation tables, loss curves of both phases, the promotion decision."""

from __future__ import annotations

import logging

from components.core import storage

log = logging.getLogger(__name__)

REPORT_FILE = "report.md"


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


def write_run_report(run_uri: str, evaluation_uri: str, challenger: dict, champion_version: str | None, champion: dict | None, registered: dict) -> str:
    """Write `{run_uri}/report.md` and return its text; images are linked relative to the run folder."""
    evaluation = storage.read_text(storage.join(evaluation_uri, REPORT_FILE)).splitlines()
    curves = ["## Loss curves", ""] + [f"![phase {length}](phase-{length}/plots/loss_curve.png)" for length in (128, 512)] + [""]
    text = "\n".join(["# bert-pretraining run", ""] + promotion_section(registered) + comparison_section(challenger, champion_version, champion)
                     + curves + evaluation[1:]) + "\n"
    storage.write_text(storage.join(run_uri, REPORT_FILE), text)
    log.info("run report written to %s", storage.join(run_uri, REPORT_FILE))
    return text
