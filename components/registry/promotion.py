"""Champion/challenger promotion in the MLflow model registry: the rule, and the alias moves that apply it.

Every newly evaluated version becomes `challenger`. It replaces `champion` only
if `decide` says so: it must beat the champion's metric (MLM accuracy at 512 by
default) by more than a margin without losing more than a tolerance on the
guard metric (NSP accuracy); with no champion, it must reach an absolute floor.
Aliases and tags only (MLflow 3 deprecates stages). Every move records who,
why, when and what it replaced in tags on the version, so `rollback` can walk
back and a reader can see the history.

Concurrency guarantee: alias moves by bertpipe are serialized per registered
model by `registry_lock.alias_lock`. Inside the lock the champion is re-read
and compared with the version the decision was based on (the one evaluation
measured); if another run moved it meanwhile, nothing moves and the result is
"conflict" (re-run promotion against the new champion). After the move the
alias is read back; a mismatch (someone moving aliases outside bertpipe, e.g.
in the UI) is also reported as "conflict". So two pipeline runs finishing at
once never both believe they won, and `previous` tags always name the champion
that was really replaced.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

from components.core.errors import BertpipeError
from components.core.model_store import CHAMPION, alias_version, registry_client
from components.core.scoring import HIGHER_IS_BETTER
from components.core.settings import setting
from components.core.tracking import mlflow_errors
from components.registry.lock import alias_lock
from components.registry.register import METRIC_TAG_PREFIX

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
DECISION_TAG = "bertpipe.promotion.decision"
REASONS_TAG = "bertpipe.promotion.reasons"
COMPARED_WITH_TAG = "bertpipe.promotion.compared_with"
# Float noise must not decide a tie: 0.31 - 0.30 is 0.010000000000000009.
EPSILON = 1e-9
MAX_TAG_VALUE = 5000


@dataclass(frozen=True)
class PromotionPolicy:
    """When a challenger replaces the champion (all thresholds in the metric's own units)."""

    metric: str = "mlm_accuracy_512"
    margin: float = 0.0  # the challenger must beat the champion by MORE than this
    guard_metric: str = "nsp_accuracy_512"
    guard_tolerance: float = 0.01  # the guard metric may drop by at most this
    floor: float = 0.0  # the metric must reach at least this, champion or not


PROMOTION_METRICS = tuple(f"{name}_{length}" for length in (128, 512) for name in HIGHER_IS_BETTER)


@dataclass(frozen=True)
class PromotionSettings:
    """The pipeline's promotion rule, as settings (the register-and-promote step's)."""

    promotion_metric: str = setting("mlm_accuracy_512", "metric the new model must improve to replace the champion (higher is better)", choices=PROMOTION_METRICS)
    promotion_margin: float = setting(0.0, "how much it must beat the champion by (strictly more than this)", minimum=0.0, maximum=1.0)
    nsp_tolerance: float = setting(0.01, "how much NSP accuracy at 512 may drop at most on promotion", minimum=0.0, maximum=1.0)
    promotion_floor: float = setting(0.0, "the metric's minimum for any champion, the first one included", minimum=0.0, maximum=1.0)
    promotion_dry_run: bool = setting(False, "decide and report, but move no alias")

    @property
    def policy(self) -> "PromotionPolicy":
        return PromotionPolicy(metric=self.promotion_metric, margin=self.promotion_margin, guard_tolerance=self.nsp_tolerance, floor=self.promotion_floor)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)


def _value(metrics: Mapping[str, float] | None, key: str) -> float | None:
    value = (metrics or {}).get(key)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def decide(challenger: Mapping[str, float], champion: Mapping[str, float] | None, policy: PromotionPolicy = PromotionPolicy()) -> Decision:
    """Whether `challenger` should replace `champion` (None: there is none), with every reason. Pure: metrics in, decision out."""
    metric, guard = policy.metric, policy.guard_metric
    value = _value(challenger, metric)
    if value is None:
        return Decision(False, (f"challenger has no {metric}",))
    if value < policy.floor - EPSILON:
        return Decision(False, (f"{metric} {value:.4f} is below the floor {policy.floor:.4f}",))
    if champion is None:
        return Decision(True, (f"no champion yet and {metric} {value:.4f} reaches the floor {policy.floor:.4f}",))

    best = _value(champion, metric)
    if best is None:
        return Decision(False, (f"champion has no {metric} to compare with",))
    gain = value - best
    beats = gain > policy.margin + EPSILON
    reasons = [f"{metric} {value:.4f} vs champion {best:.4f} ({gain:+.4f}, {'more' if beats else 'not more'} than the margin {policy.margin:.4f})"]

    guard_value, guard_best = _value(challenger, guard), _value(champion, guard)
    guard_ok = True
    if guard_best is None:
        reasons.append(f"champion has no {guard}; not checked")
    elif guard_value is None:
        guard_ok = False
        reasons.append(f"challenger has no {guard} while the champion has {guard_best:.4f}")
    else:
        drop = guard_best - guard_value
        guard_ok = drop <= policy.guard_tolerance + EPSILON
        reasons.append(f"{guard} {guard_value:.4f} vs champion {guard_best:.4f} (change {-drop:+.4f}, {'within' if guard_ok else 'beyond'} the tolerance {policy.guard_tolerance:.4f} for a drop)")
    return Decision(beats and guard_ok, tuple(reasons))


def default_actor() -> str:
    """Who is acting: the login name from the environment (never a credential)."""
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def registered_metrics(client, name: str, version: str) -> dict[str, float]:
    """The metrics a version was registered with (its metric.* tags)."""
    tags = client.get_model_version(name, version).tags
    return {key[len(METRIC_TAG_PREFIX):]: float(value) for key, value in tags.items() if key.startswith(METRIC_TAG_PREFIX)}


def _set_tags(client, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:MAX_TAG_VALUE])


def _move_alias(client, name: str, alias: str, version: str, *, expected: str | None, actor: str, reason: str) -> tuple[bool, str | None, str]:
    """Point alias at version if it still points at `expected`; returns (moved, alias now, why not)."""
    with alias_lock(client, name, actor=actor):
        current = alias_version(client, name, alias)
        if current != expected:
            return False, current, f"{alias} moved from {expected or 'none'} to {current or 'none'} after the decision"
        client.set_registered_model_alias(name, alias, version)
        after = alias_version(client, name, alias)
        if after != version:
            return False, after, f"{alias} was moved to {after} by someone else while it was being set"
        _set_tags(client, name, version, {
            f"bertpipe.{alias}.previous": expected or "none",
            f"bertpipe.{alias}.promoted_at": _now(),
            f"bertpipe.{alias}.promoted_by": actor,
            f"bertpipe.{alias}.reason": reason,
        })
    log.info("%s of %s: %s -> %s (%s, by %s)", alias, name, expected or "none", version, reason, actor)
    return True, version, ""


def promote_if_better(
    registered_model_name: str,
    version: str,
    *,
    tracking_uri: str,
    challenger_metrics: Mapping[str, float] | None = None,
    champion_version: str | None = None,
    champion_metrics: Mapping[str, float] | None = None,
    policy: PromotionPolicy = PromotionPolicy(),
    dry_run: bool = False,
    actor: str | None = None,
) -> dict:
    """Make `version` the challenger and decide whether it becomes champion; apply that unless dry_run.

    Give the champion's metrics measured on the same test data in the same step
    (`champion_version` + `champion_metrics`, e.g. from evaluating
    `model_store.download_model("models:/NAME@champion")`); without them the
    champion's registration metrics (its metric.* tags) are used, and the
    reasons say so. `challenger_metrics` defaults to the version's own tags.
    Returns {"name", "version", "decision": "promoted" | "kept" | "conflict",
    "promoted", "reasons", "champion_before", "champion_after", "dry_run"}.
    """
    actor = actor or default_actor()
    name, version = registered_model_name, str(version)
    champion_version = None if champion_version is None else str(champion_version)
    with mlflow_errors(tracking_uri, f"deciding promotion of {name} version {version}"):
        client = registry_client(tracking_uri)
        challenger = dict(challenger_metrics) if challenger_metrics is not None else registered_metrics(client, name, version)
        current = alias_version(client, name, CHAMPION)
        label, reasons = "kept", []
        if current is not None and champion_metrics is None:
            champion_version, champion_metrics = current, registered_metrics(client, name, current)
            reasons.append(f"champion {current} compared by its registration metrics (not re-evaluated)")
        # The version whose metrics this decision used (not the champion found now, which may have moved since).
        compared_with = champion_version if champion_metrics is not None else current
        if current == version:
            decision, reasons = Decision(False), [f"version {version} is already the champion"]
        elif champion_metrics is not None and champion_version != current:
            label, decision = "conflict", Decision(False)
            reasons = [f"champion is {current or 'none'}, but the champion metrics given are for {champion_version or 'an unnamed version'}; evaluate the current champion"]
        else:
            decision = decide(challenger, champion_metrics, policy)
            reasons += decision.reasons
            label = "promoted" if decision.promote else "kept"
        result = {
            "name": name, "version": version, "decision": label, "promoted": decision.promote,
            "reasons": reasons, "champion_before": current, "champion_after": version if decision.promote else current, "dry_run": dry_run,
        }
        if dry_run:
            log.info("dry run: %s version %s would be %s: %s", name, version, result["decision"], "; ".join(reasons))
            return result

        client.set_registered_model_alias(name, CHALLENGER, version)
        if decision.promote:
            moved, now, why_not = _move_alias(client, name, CHAMPION, version, expected=current, actor=actor, reason="; ".join(reasons))
            if not moved:
                result.update(decision="conflict", promoted=False, champion_after=now, reasons=[*reasons, why_not])
        _set_tags(client, name, version, {
            DECISION_TAG: result["decision"], REASONS_TAG: "; ".join(result["reasons"]), COMPARED_WITH_TAG: compared_with or "none",
            "bertpipe.promotion.decided_at": _now(), "bertpipe.promotion.decided_by": actor,
        })
    log.info("%s version %s %s: %s", name, version, result["decision"], "; ".join(result["reasons"]))
    return result


def promote(registered_model_name: str, version: str, *, tracking_uri: str, alias: str = CHAMPION, reason: str, actor: str | None = None) -> dict:
    """Point alias at version by hand (whatever the metrics say), recording who, why and what it replaced.

    Returns {"name", "alias", "version", "previous"}.
    """
    if not reason.strip():
        raise BertpipeError("promote needs a --reason: it is recorded on the version")
    actor = actor or default_actor()
    name, version = registered_model_name, str(version)
    with mlflow_errors(tracking_uri, f"promoting {name} version {version} to {alias}"):
        client = registry_client(tracking_uri)
        client.get_model_version(name, version)  # a clear error before anything moves
        previous = alias_version(client, name, alias)
        if previous == version:
            return {"name": name, "alias": alias, "version": version, "previous": previous}
        moved, now, why_not = _move_alias(client, name, alias, version, expected=previous, actor=actor, reason=reason)
    if not moved:
        raise BertpipeError(f"{name}: {why_not}; check `{alias}` and retry")
    return {"name": name, "alias": alias, "version": version, "previous": previous}


def rollback(registered_model_name: str, *, tracking_uri: str, alias: str = CHAMPION, reason: str, actor: str | None = None) -> dict:
    """Point alias back at the version it pointed at before its current one, recording who and why on both.

    Returns {"name", "alias", "version" (now), "rolled_back" (the version it left)}.
    """
    if not reason.strip():
        raise BertpipeError("rollback needs a --reason: it is recorded on the versions")
    actor = actor or default_actor()
    name = registered_model_name
    with mlflow_errors(tracking_uri, f"rolling back {alias} of {name}"):
        client = registry_client(tracking_uri)
        with alias_lock(client, name, actor=actor):
            current = alias_version(client, name, alias)
            if current is None:
                raise BertpipeError(f"{name} has no {alias} to roll back")
            previous = client.get_model_version(name, current).tags.get(f"bertpipe.{alias}.previous", "none")
            if previous == "none":
                raise BertpipeError(f"{name} version {current} has no earlier {alias} to roll back to")
            client.get_model_version(name, previous)  # still there?
            client.set_registered_model_alias(name, alias, previous)
            at = _now()
            _set_tags(client, name, current, {f"bertpipe.{alias}.rolled_back_at": at, f"bertpipe.{alias}.rolled_back_by": actor,
                                              f"bertpipe.{alias}.rollback_reason": reason, f"bertpipe.{alias}.rolled_back_to": previous})
            _set_tags(client, name, previous, {f"bertpipe.{alias}.restored_at": at, f"bertpipe.{alias}.restored_by": actor,
                                               f"bertpipe.{alias}.restore_reason": reason, f"bertpipe.{alias}.restored_from": current})
    log.info("%s of %s rolled back from %s to %s (%s, by %s)", alias, name, current, previous, reason, actor)
    return {"name": name, "alias": alias, "version": previous, "rolled_back": current}
