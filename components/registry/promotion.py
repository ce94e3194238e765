"""Champion/challenger promotion in the MLflow model registry: the rule, and the alias moves that apply it.

Every newly evaluated version becomes `challenger`. It replaces `champion` only
if `decide` says so: it must beat the champion's metric (MLM accuracy at 512 by
default) by more than a margin without losing more than a tolerance on the
guard metric (NSP accuracy); with no champion, it must reach an absolute floor.
Either way both must beat their trivial baselines measured on the same test split
(always guessing the most frequent masked token, the majority NSP class); MLM accuracy
also at the [MASK] positions alone, where copying the unchanged 10% earns nothing.
"Beat" means clearly: the lower bound of the paired bootstrap interval of model minus
trivial guess (from the evaluate step) above 0; without one, the point values decide.
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
import pwd
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Mapping

from components.core.baselines import baseline_key, floor_metrics
from components.core.errors import BertpipeError
from components.core.model_store import CHAMPION, alias_version, registry_client
from components.core.tracking import mlflow_errors
from components.registry.history import record_move
from components.registry.lock import alias_lock
from components.registry.register import METRIC_TAG_PREFIX
from components.registry.settings import PromotionPolicy

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
DECISION_TAG = "bertpipe.promotion.decision"
REASONS_TAG = "bertpipe.promotion.reasons"
COMPARED_WITH_TAG = "bertpipe.promotion.compared_with"
# Float noise must not decide a tie: 0.31 - 0.30 is 0.010000000000000009.
EPSILON = 1e-9
MAX_TAG_VALUE = 5000


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)


def _value(metrics: Mapping[str, float] | None, key: str) -> float | None:
    value = (metrics or {}).get(key)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _interval_words(interval: Mapping) -> str:
    return (f"{interval['level']:.0%} interval [{interval['low']:+.4f}, {interval['high']:+.4f}] over {interval['instances']} instances"
            f" ({interval['units']} units)")


def _beats(metric: str, value: float, best: float, margin: float, interval: Mapping | None) -> tuple[bool, str]:
    """Whether the gain clears the margin: its interval's lower bound when there is one, else the point difference."""
    gain = value - best
    if interval is None:
        beats = gain > margin + EPSILON
        return beats, f"{metric} {value:.4f} vs champion {best:.4f} ({gain:+.4f}, {'more' if beats else 'not more'} than the margin {margin:.4f})"
    beats = interval["low"] > margin + EPSILON
    return beats, (f"{metric} {value:.4f} vs champion {best:.4f} ({gain:+.4f}, {_interval_words(interval)}: lower bound "
                   f"{'above' if beats else 'not above'} the margin {margin:.4f})")


def _above_baseline(metric: str, value: float, trivial: float, interval: Mapping | None) -> tuple[bool, str]:
    """Whether `metric` beats its trivial baseline: its interval's lower bound above 0 when there is one, else the point value."""
    gain = value - trivial
    if interval is None:
        beats = gain > EPSILON
        return beats, f"{metric} {value:.4f} vs trivial {trivial:.4f} ({gain:+.4f}, no interval): {'above' if beats else 'not above'}"
    beats = interval["low"] > EPSILON
    return beats, (f"{metric} {value:.4f} vs trivial {trivial:.4f} ({gain:+.4f}, {interval['level']:.0%} interval [{interval['low']:+.4f}, "
                   f"{interval['high']:+.4f}]): {'clearly above' if beats else 'not clearly above'}")


def _within(name: str, value: float, best: float, tolerance: float, interval: Mapping | None) -> tuple[bool, str]:
    """Whether a drop stays within the tolerance: the interval's lower bound must not fall below -tolerance."""
    change = value - best
    low = change if interval is None else interval["low"]
    ok = low >= -tolerance - EPSILON
    where = "" if interval is None else f"{_interval_words(interval)}; "
    return ok, f"{name} {value:.4f} vs champion {best:.4f} (change {change:+.4f}, {where}{'within' if ok else 'beyond'} the tolerance {tolerance:.4f} for a drop)"


def _probe_check(probe: Mapping | None, tolerance: float) -> tuple[bool, str]:
    if not probe or not probe.get("challenger"):
        return False, "the policy requires the downstream probe, but it did not run; run it (probe dataset) or drop --require-probe"
    if not probe.get("champion"):
        return True, "probe: " + ("; ".join(probe.get("notes") or []) or "the champion has no probe result") + "; not compared"
    return _within("probe accuracy", probe["challenger"]["accuracy"], probe["champion"]["accuracy"], tolerance, probe.get("interval"))


def decide(challenger: Mapping[str, float], champion: Mapping[str, float] | None, policy: PromotionPolicy = PromotionPolicy(),
           intervals: Mapping[str, Mapping] | None = None, probe: Mapping | None = None,
           baseline_intervals: Mapping[str, Mapping] | None = None) -> Decision:
    """Whether `challenger` should replace `champion` (None: there is none), with every reason. Pure: metrics in, decision out.

    `intervals` (metric -> paired bootstrap interval of challenger minus champion, from the evaluate step) make the
    rule statistical: the lower bound must clear the margin, and must not fall below minus the tolerance for the
    guard metric. Without an interval the point difference decides, and the reason says so. `probe` is the
    probe step's result; it decides only when policy.probe_tolerance is set. `baseline_intervals` (metric -> paired
    bootstrap interval of challenger minus its trivial baseline) do the same for the baselines: a metric beats its
    baseline only if the lower bound is above 0; without one, only if the point value is above it.
    """
    metric, guard, intervals, baseline_intervals = policy.metric, policy.guard_metric, intervals or {}, baseline_intervals or {}
    value = _value(challenger, metric)
    if value is None:
        return Decision(False, (f"challenger has no {metric}",))
    if value < policy.floor - EPSILON:
        return Decision(False, (f"{metric} {value:.4f} is below the floor {policy.floor:.4f}",))
    above_baselines = []
    for key in (*floor_metrics(metric), guard) if policy.beat_baselines else ():
        trivial, measured = _value(challenger, baseline_key(key) or ""), _value(challenger, key)
        if trivial is None or measured is None:
            continue
        above, reason = _above_baseline(key, measured, trivial, baseline_intervals.get(key))
        if not above:
            return Decision(False, (reason,))
        above_baselines.append(reason)
    if champion is None:
        absolute = f" and {metric} {value:.4f} reaches the floor {policy.floor:.4f}" if policy.floor > 0 else ""  # the default floor is the baselines
        first = (f"no champion yet{absolute}", *above_baselines)
        if policy.probe_tolerance is None:
            return Decision(True, first)
        probe_ok, reason = _probe_check(probe, policy.probe_tolerance)  # a required probe that never ran blocks a first version too
        return Decision(probe_ok, (*first, reason) if probe_ok else (reason, *first))

    best = _value(champion, metric)
    if best is None:
        return Decision(False, (f"champion has no {metric} to compare with",))
    beats, reason = _beats(metric, value, best, policy.margin, intervals.get(metric))
    reasons = [reason]

    guard_value, guard_best = _value(challenger, guard), _value(champion, guard)
    guard_ok = True
    if guard_best is None:
        reasons.append(f"champion has no {guard}; not checked")
    elif guard_value is None:
        guard_ok = False
        reasons.append(f"challenger has no {guard} while the champion has {guard_best:.4f}")
    else:
        guard_ok, reason = _within(guard, guard_value, guard_best, policy.guard_tolerance, intervals.get(guard))
        reasons.append(reason)
    probe_ok = True
    if policy.probe_tolerance is not None:
        probe_ok, reason = _probe_check(probe, policy.probe_tolerance)
        reasons.append(reason)
    return Decision(beats and guard_ok and probe_ok, tuple(reasons + above_baselines))


def default_actor() -> str:
    """Who is acting: the login name (never a credential); in a pod without one, the uid it runs as."""
    name = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not name:
        try:
            name = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            name = f"uid {os.getuid()}"
    return name


def pipeline_actor(pipeline_run_id: str) -> str:
    """Who decides in a pipeline: the run (the id KFP shows), and the account it runs as."""
    return f"pipeline run {pipeline_run_id} ({default_actor()})" if pipeline_run_id else default_actor()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def registered_metrics(client, name: str, version: str) -> dict[str, float]:
    """The metrics a version was registered with (its metric.* tags)."""
    tags = client.get_model_version(name, version).tags
    return {key[len(METRIC_TAG_PREFIX):]: float(value) for key, value in tags.items() if key.startswith(METRIC_TAG_PREFIX)}


def _set_tags(client, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value)[:MAX_TAG_VALUE])


def _move_alias(client, name: str, alias: str, version: str, *, expected: str | None, actor: str, reason: str, action: str,
                pipeline_run: str = "") -> tuple[bool, str | None, str]:
    """Point alias at version if it still points at `expected`, and record the move in the history; returns (moved, alias now, why not)."""
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
        record_move(client, name, alias=alias, previous=expected, version=version, action=action, actor=actor, reason=reason, pipeline_run=pipeline_run)
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
    pipeline_run: str = "",
    intervals: Mapping[str, Mapping] | None = None,
    probe: Mapping | None = None,
    baseline_intervals: Mapping[str, Mapping] | None = None,
) -> dict:
    """Make `version` the challenger and decide whether it becomes champion; apply that unless dry_run.

    Give the champion's metrics measured on the same test data in the same step
    (`champion_version` + `champion_metrics`, e.g. from evaluating
    `model_store.download_model("models:/NAME@champion")`); without them the
    champion's registration metrics (its metric.* tags) are used, and the
    reasons say so. `challenger_metrics` defaults to the version's own tags;
    `baseline_intervals` (challenger minus trivial baselines) come from the same evaluation.
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
        re_evaluated = champion_metrics is not None  # intervals exist only for a champion measured on the same instances
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
            decision = decide(challenger, champion_metrics, policy, intervals if re_evaluated else None, probe, baseline_intervals)
            reasons += decision.reasons
            label = "promoted" if decision.promote else "kept"
        result = {
            "name": name, "version": version, "decision": label, "promoted": decision.promote,
            "reasons": reasons, "champion_before": current, "champion_after": version if decision.promote else current, "dry_run": dry_run,
        }
        if dry_run:
            log.info("dry run: %s version %s would be %s: %s", name, version, result["decision"], "; ".join(reasons))
            return result

        with alias_lock(client, name, actor=actor):
            before = alias_version(client, name, CHALLENGER)
            client.set_registered_model_alias(name, CHALLENGER, version)
            if before != version:
                record_move(client, name, alias=CHALLENGER, previous=before, version=version, action="challenged", actor=actor,
                            reason=f"newly evaluated against champion {current or 'none'}", pipeline_run=pipeline_run)
        if decision.promote:
            moved, now, why_not = _move_alias(client, name, CHAMPION, version, expected=current, actor=actor, reason="; ".join(reasons),
                                              action="promoted", pipeline_run=pipeline_run)
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
        moved, now, why_not = _move_alias(client, name, alias, version, expected=previous, actor=actor, reason=reason, action="promote")
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
            record_move(client, name, alias=alias, previous=current, version=previous, action="rollback", actor=actor, reason=reason, at=at)
    log.info("%s of %s rolled back from %s to %s (%s, by %s)", alias, name, current, previous, reason, actor)
    return {"name": name, "alias": alias, "version": previous, "rolled_back": current}
