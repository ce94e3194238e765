"""The audit trail of a registered model's aliases: every move, who or which pipeline run made it, and why.

One registered-model tag per move, `bertpipe.history.000042` = a small JSON
object, written inside the alias lock right after the move (so the sequence
numbers never collide and a move is never recorded twice). One tag per event
rather than one growing JSON blob: a tag value is capped (5,000 characters in
MLflow's SQL stores), an event is a few hundred. The versions' own tags
(`bertpipe.champion.previous`, ...) stay as they were; this is the ordered view.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

HISTORY_PREFIX = "bertpipe.history."
MAX_REASON = 1000
COLUMNS = ("seq", "at", "alias", "from", "to", "action", "by", "pipeline_run", "reason")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_move(client, name: str, *, alias: str, previous: str | None, version: str | None, action: str, actor: str,
                reason: str, pipeline_run: str = "", at: str | None = None) -> dict:
    """Append one event to `name`'s history (call it while holding the alias lock); returns the event.

    action: "promoted" (by the policy), "promote" (by hand), "rollback".
    """
    events = read_events(client, name)
    event = {
        "seq": (events[-1]["seq"] + 1) if events else 1, "at": at or now(), "alias": alias, "from": previous or "none", "to": version or "none",
        "action": action, "by": actor, "pipeline_run": pipeline_run, "reason": reason[:MAX_REASON],
    }
    client.set_registered_model_tag(name, f"{HISTORY_PREFIX}{event['seq']:06d}", json.dumps(event, sort_keys=True))
    return event


def read_events(client, name: str, alias: str | None = None) -> list[dict]:
    """Every recorded move of `name` (optionally of one alias), oldest first."""
    tags = client.get_registered_model(name).tags
    events = [json.loads(value) for key, value in tags.items() if key.startswith(HISTORY_PREFIX)]
    return sorted((e for e in events if alias is None or e["alias"] == alias), key=lambda e: e["seq"])


def history(registered_model_name: str, *, tracking_uri: str, alias: str | None = None) -> list[dict]:
    """The recorded alias moves of a registered model, oldest first."""
    import mlflow

    from components.core.tracking import mlflow_errors

    with mlflow_errors(tracking_uri, f"reading the alias history of {registered_model_name}"):
        return read_events(mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri), registered_model_name, alias)


def render_table(events: list[dict]) -> str:
    """A plain-text table, one row per move (the reason last, unpadded, since it can be long)."""
    if not events:
        return "no alias moves recorded"
    rows = [list(COLUMNS)] + [[str(event.get(column, "")) or "-" for column in COLUMNS] for event in events]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in rows)
