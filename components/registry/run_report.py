"""The Markdown report of one pipeline run: the promotion decision, the loss curves of the phases, the evaluation."""

from __future__ import annotations

import logging

from components.core import storage
from components.core.scoring import EVALUATION_REPORT_FILE

log = logging.getLogger(__name__)

VERDICTS = {"promoted": "became **champion**", "kept": "stays **challenger**", "conflict": "was **not promoted**: the champion moved meanwhile (a conflict)"}


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


def write_run_report(report_uri: str, evaluation_uri: str, registered: dict, phases: list[dict]) -> str:
    """Write the run report to report_uri and return its text; `phases` are the training summaries, first phase first."""
    evaluation = storage.read_text(storage.join(evaluation_uri, EVALUATION_REPORT_FILE)).splitlines()
    curves = ["## Loss curves", ""]
    curves += [f"![phase {phase['max_seq_length']}]({_link(report_uri, storage.join(phase['output_uri'], 'plots', 'loss_curve.png'))})" for phase in phases]
    text = "\n".join(["# bert-pretraining run", ""] + promotion_section(registered) + curves + [""] + evaluation[1:]) + "\n"
    storage.write_text(report_uri, text)
    log.info("run report written to %s", report_uri)
    return text
