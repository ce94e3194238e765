"""The promotion rule (pure) and the alias moves that apply it, on an embedded sqlite registry."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import mlflow
import pytest

from components.core.errors import BertpipeError
from components.core.model_store import CHAMPION, alias_version, current_champion
from components.registry.promotion import CHALLENGER, PromotionPolicy, decide, promote, promote_if_better, rollback
from components.registry.lock import alias_lock, lock_name

MLM, NSP = "mlm_accuracy_512", "nsp_accuracy_512"
NAME = "bert"


def metrics(mlm: float | None, nsp: float | None = 0.8) -> dict[str, float]:
    return {key: value for key, value in ((MLM, mlm), (NSP, nsp)) if value is not None}


# --- the rule ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "challenger, champion, policy, promoted, reason",
    [
        (metrics(0.30), None, PromotionPolicy(floor=0.2), True, "no champion yet"),
        (metrics(0.20), None, PromotionPolicy(floor=0.2), True, "reaches the floor 0.2000"),
        (metrics(0.19), None, PromotionPolicy(floor=0.2), False, "below the floor 0.2000"),
        (metrics(0.31), metrics(0.30), PromotionPolicy(), True, "+0.0100, more than the margin 0.0000"),
        (metrics(0.30), metrics(0.30), PromotionPolicy(), False, "+0.0000, not more than the margin"),
        (metrics(0.29), metrics(0.30), PromotionPolicy(), False, "-0.0100, not more than the margin"),
        (metrics(0.31), metrics(0.30), PromotionPolicy(margin=0.01), False, "not more than the margin 0.0100"),
        (metrics(0.32), metrics(0.30), PromotionPolicy(margin=0.01), True, "more than the margin 0.0100"),
        (metrics(0.40, nsp=0.78), metrics(0.30, nsp=0.80), PromotionPolicy(), False, "beyond the tolerance 0.0100"),
        (metrics(0.40, nsp=0.79), metrics(0.30, nsp=0.80), PromotionPolicy(), True, "within the tolerance 0.0100"),
        (metrics(0.40, nsp=0.70), metrics(0.30, nsp=0.80), PromotionPolicy(guard_tolerance=0.2), True, "within the tolerance 0.2000"),
        (metrics(0.40, nsp=None), metrics(0.30), PromotionPolicy(), False, "challenger has no nsp_accuracy_512"),
        (metrics(0.40), metrics(0.30, nsp=None), PromotionPolicy(), True, "champion has no nsp_accuracy_512; not checked"),
        (metrics(None), None, PromotionPolicy(), False, "challenger has no mlm_accuracy_512"),
        (metrics(float("nan")), metrics(0.3), PromotionPolicy(), False, "challenger has no mlm_accuracy_512"),
        (metrics(0.40), {NSP: 0.8}, PromotionPolicy(), False, "champion has no mlm_accuracy_512"),
        (metrics(0.40), metrics(0.30), PromotionPolicy(floor=0.5), False, "below the floor"),
        ({"mlm_accuracy_128": 0.5}, {"mlm_accuracy_128": 0.4}, PromotionPolicy(metric="mlm_accuracy_128", guard_metric="nsp_accuracy_128"), True, "champion has no nsp_accuracy_128"),
    ],
)
def test_decide(challenger, champion, policy, promoted, reason):
    decision = decide(challenger, champion, policy)
    assert decision.promote is promoted
    assert any(reason in line for line in decision.reasons), decision.reasons


def test_a_required_probe_that_never_ran_blocks_a_first_version_too():
    required = PromotionPolicy(floor=0.2, probe_tolerance=0.01)
    blocked = decide(metrics(0.30), None, required, probe=None)
    assert not blocked.promote and blocked.reasons[0].startswith("the policy requires the downstream probe, but it did not run")
    probed = decide(metrics(0.30), None, required, probe={"challenger": {"accuracy": 0.6}, "notes": ["no champion to compare with"]})
    assert probed.promote and probed.reasons[0].startswith("no champion yet") and "not compared" in probed.reasons[-1]
    assert decide(metrics(0.30), None, PromotionPolicy(floor=0.2), probe=None).promote  # not required: no probe is fine


def test_worse_mlm_is_refused_even_with_better_nsp_and_both_reasons_are_given():
    decision = decide(metrics(0.29, nsp=0.95), metrics(0.30, nsp=0.80))
    assert not decision.promote
    assert decision.reasons == (
        "mlm_accuracy_512 0.2900 vs champion 0.3000 (-0.0100, not more than the margin 0.0000)",
        "nsp_accuracy_512 0.9500 vs champion 0.8000 (change +0.1500, within the tolerance 0.0100 for a drop)",
    )


# --- the registry -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """An empty sqlite store, created once: creating one runs every MLflow migration (seconds)."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def registry(tmp_path, monkeypatch, empty_store):
    """A sqlite registry with a function that adds a version carrying the given registration metrics."""
    monkeypatch.setenv("USER", "alice")
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(NAME)

    def add_version(mlm: float, nsp: float = 0.8) -> str:
        tags = {f"metric.{key}": str(value) for key, value in metrics(mlm, nsp).items()}
        return str(client.create_model_version(NAME, source=str(tmp_path / "model"), tags=tags).version)

    return uri, client, add_version


def test_first_version_above_the_floor_becomes_champion_and_challenger(registry):
    uri, client, add_version = registry
    version = add_version(0.3)
    result = promote_if_better(NAME, version, tracking_uri=uri, policy=PromotionPolicy(floor=0.1))
    assert result == {
        "name": NAME, "version": "1", "decision": "promoted", "promoted": True, "dry_run": False,
        "reasons": ["no champion yet and mlm_accuracy_512 0.3000 reaches the floor 0.1000"], "champion_before": None, "champion_after": "1",
    }
    assert alias_version(client, NAME, CHAMPION) == "1" and alias_version(client, NAME, CHALLENGER) == "1"
    assert current_champion(NAME, tracking_uri=uri) == "1"
    tags = client.get_model_version(NAME, "1").tags
    assert tags["bertpipe.promotion.decision"] == "promoted"
    assert tags["bertpipe.promotion.compared_with"] == "none"
    assert tags["bertpipe.promotion.decided_by"] == "alice" and tags["bertpipe.champion.promoted_by"] == "alice"
    assert tags["bertpipe.champion.previous"] == "none"


def test_first_version_below_the_floor_stays_challenger_only(registry):
    uri, client, add_version = registry
    result = promote_if_better(NAME, add_version(0.05), tracking_uri=uri, policy=PromotionPolicy(floor=0.1))
    assert result["decision"] == "kept" and result["champion_after"] is None
    assert alias_version(client, NAME, CHAMPION) is None and alias_version(client, NAME, CHALLENGER) == "1"
    assert current_champion(NAME, tracking_uri=uri) is None and current_champion("never-registered", tracking_uri=uri) is None
    assert "below the floor" in client.get_model_version(NAME, "1").tags["bertpipe.promotion.reasons"]


def test_a_first_version_inside_the_noise_of_its_trivial_baseline_stays_challenger(registry):
    uri, client, add_version = registry
    challenger = {**metrics(0.30), "most_frequent_token_accuracy_512": 0.29}
    noisy = {MLM: {"difference": 0.01, "low": -0.004, "high": 0.024, "level": 0.95, "instances": 100, "units": 1500, "resamples": 1000, "seed": 0}}
    result = promote_if_better(NAME, add_version(0.30), tracking_uri=uri, challenger_metrics=challenger, baseline_intervals=noisy)
    reason = "mlm_accuracy_512 0.3000 vs trivial 0.2900 (+0.0100, 95% interval [-0.0040, +0.0240]): not clearly above"
    assert (result["decision"], result["reasons"]) == ("kept", [reason])
    assert alias_version(client, NAME, CHAMPION) is None and client.get_model_version(NAME, "1").tags["bertpipe.promotion.reasons"] == reason


def test_better_challenger_replaces_the_champion_measured_in_the_same_step(registry):
    uri, client, add_version = registry
    promote_if_better(NAME, add_version(0.30), tracking_uri=uri)
    # Registered with 0.50, but the champion re-evaluated on today's test data scores 0.40: that is what counts.
    result = promote_if_better(NAME, add_version(0.45), tracking_uri=uri, champion_version="1", champion_metrics=metrics(0.40), actor="ci-bot")
    assert result["decision"] == "promoted" and result["champion_before"] == "1" and result["champion_after"] == "2"
    assert alias_version(client, NAME, CHAMPION) == "2"
    tags = client.get_model_version(NAME, "2").tags
    assert tags["bertpipe.champion.previous"] == "1" and tags["bertpipe.champion.promoted_by"] == "ci-bot"
    assert "0.4500 vs champion 0.4000" in tags["bertpipe.champion.reason"]


@pytest.mark.parametrize("mlm", [0.30, 0.29])
def test_equal_or_worse_challenger_leaves_the_champion(registry, mlm):
    uri, client, add_version = registry
    promote_if_better(NAME, add_version(0.30), tracking_uri=uri)
    result = promote_if_better(NAME, add_version(mlm), tracking_uri=uri)
    assert result["decision"] == "kept" and result["champion_after"] == "1"
    assert result["reasons"][0] == "champion 1 compared by its registration metrics (not re-evaluated)"
    assert alias_version(client, NAME, CHAMPION) == "1" and alias_version(client, NAME, CHALLENGER) == "2"
    assert client.get_model_version(NAME, "2").tags["bertpipe.promotion.decision"] == "kept"


def test_dry_run_decides_without_moving_aliases_or_tagging(registry):
    uri, client, add_version = registry
    promote_if_better(NAME, add_version(0.30), tracking_uri=uri)
    result = promote_if_better(NAME, add_version(0.40), tracking_uri=uri, dry_run=True)
    assert result["decision"] == "promoted" and result["dry_run"] is True
    assert alias_version(client, NAME, CHAMPION) == "1" and alias_version(client, NAME, CHALLENGER) == "1"
    assert not any(key.startswith("bertpipe.") for key in client.get_model_version(NAME, "2").tags)


def test_metrics_of_a_champion_that_has_since_been_replaced_give_a_conflict(registry):
    uri, client, add_version = registry
    promote_if_better(NAME, add_version(0.30), tracking_uri=uri)
    promote_if_better(NAME, add_version(0.40), tracking_uri=uri)
    result = promote_if_better(NAME, add_version(0.35), tracking_uri=uri, champion_version="1", champion_metrics=metrics(0.30))
    assert result["decision"] == "conflict" and not result["promoted"]
    assert "champion is 2, but the champion metrics given are for 1" in result["reasons"][0]
    assert alias_version(client, NAME, CHAMPION) == "2"
    # Its metrics were compared with version 1's (measured in its evaluate step), not with the new champion's.
    assert client.get_model_version(NAME, "3").tags["bertpipe.promotion.compared_with"] == "1"


def test_rerunning_promotion_of_the_champion_changes_nothing(registry):
    uri, client, add_version = registry
    promote_if_better(NAME, add_version(0.30), tracking_uri=uri)
    result = promote_if_better(NAME, "1", tracking_uri=uri)
    assert result["decision"] == "kept" and result["reasons"] == ["version 1 is already the champion"]


def test_manual_promote_and_rollback_walk_the_champion_history(registry):
    uri, client, add_version = registry
    for mlm in (0.3, 0.4, 0.5):
        add_version(mlm)
    assert promote(NAME, "1", tracking_uri=uri, reason="first") == {"name": NAME, "alias": CHAMPION, "version": "1", "previous": None}
    promote(NAME, "3", tracking_uri=uri, reason="skip 2: bad data", actor="bob")
    assert rollback(NAME, tracking_uri=uri, reason="3 mislabels dates", actor="carol") == {"name": NAME, "alias": CHAMPION, "version": "1", "rolled_back": "3"}
    assert alias_version(client, NAME, CHAMPION) == "1"

    left, restored = client.get_model_version(NAME, "3").tags, client.get_model_version(NAME, "1").tags
    assert (left["bertpipe.champion.promoted_by"], left["bertpipe.champion.reason"]) == ("bob", "skip 2: bad data")
    assert (left["bertpipe.champion.rolled_back_by"], left["bertpipe.champion.rollback_reason"], left["bertpipe.champion.rolled_back_to"]) == ("carol", "3 mislabels dates", "1")
    assert (restored["bertpipe.champion.restored_by"], restored["bertpipe.champion.restored_from"]) == ("carol", "3")
    with pytest.raises(BertpipeError, match="version 1 has no earlier champion"):
        rollback(NAME, tracking_uri=uri, reason="again")


def test_promote_and_rollback_refuse_what_they_cannot_do(registry):
    uri, client, add_version = registry
    add_version(0.3)
    with pytest.raises(BertpipeError, match="has no champion to roll back"):
        rollback(NAME, tracking_uri=uri, reason="oops")
    with pytest.raises(BertpipeError, match="needs a --reason"):
        promote(NAME, "1", tracking_uri=uri, reason=" ")
    with pytest.raises(BertpipeError, match=f"MLflow at {uri} failed while promoting {NAME} version 9"):
        promote(NAME, "9", tracking_uri=uri, reason="typo")
    assert alias_version(client, NAME, CHAMPION) is None


def test_another_alias_keeps_its_own_history(registry):
    uri, client, add_version = registry
    add_version(0.3), add_version(0.4)
    promote(NAME, "1", tracking_uri=uri, alias="staging", reason="canary")
    promote(NAME, "2", tracking_uri=uri, alias="staging", reason="canary 2")
    assert rollback(NAME, tracking_uri=uri, alias="staging", reason="revert")["version"] == "1"
    assert alias_version(client, NAME, CHAMPION) is None


# --- concurrency ------------------------------------------------------------------------------

def test_the_lock_serializes_read_modify_write(registry):
    uri, client, add_version = registry
    add_version(0.3)
    client.set_model_version_tag(NAME, "1", "counter", "0")
    start = threading.Barrier(4)

    def bump():
        start.wait()
        for _ in range(3):
            with alias_lock(client, NAME, actor="test"):
                value = int(client.get_model_version(NAME, "1").tags["counter"])
                client.set_model_version_tag(NAME, "1", "counter", str(value + 1))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.get_model_version(NAME, "1").tags["counter"] == "12"
    assert client.search_registered_models(filter_string=f"name = '{lock_name(NAME)}'") == []


def test_two_runs_finishing_at_once_leave_one_champion_and_one_conflict(registry):
    uri, client, add_version = registry
    promote_if_better(NAME, add_version(0.30), tracking_uri=uri)
    racers = [add_version(0.40), add_version(0.45)]
    start, results = threading.Barrier(2), {}

    def finish(version):
        start.wait()
        results[version] = promote_if_better(NAME, version, tracking_uri=uri, champion_version="1", champion_metrics=metrics(0.30))

    threads = [threading.Thread(target=finish, args=(version,)) for version in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    decisions = sorted(result["decision"] for result in results.values())
    assert decisions == ["conflict", "promoted"]
    winner = next(version for version, result in results.items() if result["promoted"])
    assert alias_version(client, NAME, CHAMPION) == winner
    assert client.get_model_version(NAME, winner).tags["bertpipe.champion.previous"] == "1"
    loser = next(version for version in racers if version != winner)
    assert client.get_model_version(NAME, loser).tags["bertpipe.promotion.decision"] == "conflict"
    assert results[loser]["champion_after"] == winner


def test_a_stale_lock_is_broken_and_a_live_one_times_out_with_its_name(registry):
    uri, client, add_version = registry
    client.create_registered_model(lock_name(NAME))
    with pytest.raises(BertpipeError, match=f"delete the registered model {lock_name(NAME)}"):
        with alias_lock(client, NAME, actor="test", timeout_s=0.3):
            pass
    with alias_lock(client, NAME, actor="test", stale_after_s=0.0):
        pass
    assert client.search_registered_models(filter_string=f"name = '{lock_name(NAME)}'") == []


@pytest.mark.parametrize("operation", [
    lambda uri: promote_if_better(NAME, "1", tracking_uri=uri, challenger_metrics=metrics(0.3)),
    lambda uri: promote(NAME, "1", tracking_uri=uri, reason="r"),
    lambda uri: rollback(NAME, tracking_uri=uri, reason="r"),
], ids=["promote_if_better", "promote", "rollback"])
def test_an_unreachable_tracking_server_fails_fast_naming_it(monkeypatch, operation):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(BertpipeError, match=f"MLflow at {dead} failed"):
        operation(dead)
    assert time.monotonic() - started < 20
