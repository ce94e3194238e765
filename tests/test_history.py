"""The alias audit trail on a real MLflow server: every move, automatic or by hand, in order, and `bertpipe history`."""

import json

import mlflow
import pytest

from components.core.errors import BertpipeError
from components.core.model_store import CHAMPION, alias_version
from components.registry.history import history, render_table
from components.registry.promotion import PromotionPolicy, promote, promote_if_better, rollback
from pipelines.cli import main


@pytest.fixture
def registry(servers_env, monkeypatch, request):
    monkeypatch.setenv("USER", "alice")
    uri = servers_env.tracking_uri
    name = "history-" + request.node.name.replace("_", "-")[:60]
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(name)

    def add_version(mlm: float) -> str:
        tags = {"metric.mlm_accuracy_512": str(mlm), "metric.nsp_accuracy_512": "0.8"}
        return str(client.create_model_version(name, source="s3://nowhere/model", tags=tags).version)

    return uri, name, add_version


def moves(events):
    return [(e["seq"], e["alias"], e["from"], e["to"], e["action"], e["by"]) for e in events]


def test_history_lists_every_move_made(registry, capsys):
    uri, name, add_version = registry
    policy = PromotionPolicy(floor=0.1)
    for mlm in (0.3, 0.25, 0.4):
        add_version(mlm)
    promote_if_better(name, "1", tracking_uri=uri, policy=policy, pipeline_run="run-a")   # first: champion
    promote_if_better(name, "2", tracking_uri=uri, policy=policy, pipeline_run="run-b")   # worse: challenger only
    promote_if_better(name, "3", tracking_uri=uri, policy=policy, pipeline_run="run-c", dry_run=True)  # moves nothing
    promote(name, "2", tracking_uri=uri, reason="serving prefers 2", actor="bob")
    rollback(name, tracking_uri=uri, reason="2 was slower", actor="carol")
    promote_if_better(name, "3", tracking_uri=uri, policy=policy, pipeline_run="run-c")   # better than 1: champion

    events = history(name, tracking_uri=uri)
    assert moves(events) == [
        (1, "challenger", "none", "1", "challenged", "alice"),
        (2, "champion", "none", "1", "promoted", "alice"),
        (3, "challenger", "1", "2", "challenged", "alice"),
        (4, "champion", "1", "2", "promote", "bob"),
        (5, "champion", "2", "1", "rollback", "carol"),
        (6, "challenger", "2", "3", "challenged", "alice"),
        (7, "champion", "1", "3", "promoted", "alice"),
    ]
    assert [e["pipeline_run"] for e in events] == ["run-a", "run-a", "run-b", "", "", "run-c", "run-c"]
    assert events[3]["reason"] == "serving prefers 2" and events[4]["reason"] == "2 was slower"
    assert "mlm_accuracy_512 0.4000 vs champion 0.3000" in events[6]["reason"]
    assert all(e["at"].endswith("+00:00") for e in events)
    assert [e["alias"] for e in history(name, tracking_uri=uri, alias="champion")] == ["champion"] * 4

    assert main(["history", name, "--tracking-uri", uri]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["seq", "at", "alias", "from", "to", "action", "by", "pipeline_run", "reason"]
    assert len(table) == 8 and table[5].split()[2:7] == ["champion", "2", "1", "rollback", "carol"] and table[5].endswith("2 was slower")
    assert main(["history", name, "--tracking-uri", uri, "--json", "--alias", "champion"]) == 0
    assert [e["seq"] for e in json.loads(capsys.readouterr().out)] == [2, 4, 5, 7]


def test_a_move_that_fails_records_nothing(registry):
    uri, name, add_version = registry
    add_version(0.3)
    with pytest.raises(BertpipeError, match=f"failed while promoting {name} version 7"):
        promote(name, "7", tracking_uri=uri, reason="no such version")
    assert history(name, tracking_uri=uri) == []
    assert alias_version(mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), name, CHAMPION) is None
    assert render_table([]) == "no alias moves recorded"


def test_history_of_an_unknown_model_is_a_clear_error(registry, capsys):
    uri, _, _ = registry
    assert main(["history", "no-such-model", "--tracking-uri", uri]) == 2
    assert "bertpipe: error: MLflow at" in capsys.readouterr().err
