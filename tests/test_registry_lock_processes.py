"""The registry lock across real processes and a real `mlflow server`: mutual exclusion, a holder killed
while holding, and concurrent promotions that end with the champion the policy picks."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest

from components.registry.lock import lock_name
from components.registry.promotion import CHAMPION, DECISION_TAG, alias_version

WORKER = textwrap.dedent('''
    import json, os, sys, time
    import mlflow
    from components.registry import lock

    uri, name, log_path, mode, rounds = sys.argv[1:6]
    lock.STALE_AFTER_S = 3.0
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    if mode == "die":
        with lock.alias_lock(client, name, actor="doomed"):
            with open(log_path, "a") as log:
                log.write(json.dumps({"pid": os.getpid(), "event": "enter"}) + "\\n")
            os._exit(9)  # killed while holding: the lock stays behind
    for _ in range(int(rounds)):
        with lock.alias_lock(client, name, actor=f"worker {os.getpid()}", timeout_s=120):
            with open(log_path, "a") as log:
                log.write(json.dumps({"pid": os.getpid(), "event": "enter"}) + "\\n")
            time.sleep(0.05)
            with open(log_path, "a") as log:
                log.write(json.dumps({"pid": os.getpid(), "event": "exit"}) + "\\n")
''')

PROMOTER = textwrap.dedent('''
    import os, sys
    from components.registry import lock
    from components.registry.promotion import promote_if_better

    uri, name, version = sys.argv[1:4]
    lock.STALE_AFTER_S = 3.0
    for attempt in range(10):  # a conflict means the champion moved: decide again, as a re-run would
        result = promote_if_better(name, version, tracking_uri=uri)
        if result["decision"] != "conflict":
            break
    print(result["decision"])
''')


def _spawn(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(processes) -> list[str]:
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=240)
        outputs.append(out)
        assert process.returncode == 0, err[-2000:]
    return outputs


@pytest.fixture
def tracking(servers_env):
    return servers_env.tracking_uri


def test_processes_never_hold_the_lock_together_even_after_a_holder_is_killed(tracking, tmp_path):
    name = f"lock-test-{os.getpid()}"
    log_path = tmp_path / "events.jsonl"
    doomed = _spawn(WORKER, tracking, name, str(log_path), "die", "0")
    doomed.wait(timeout=120)
    assert doomed.returncode == 9
    workers = [_spawn(WORKER, tracking, name, str(log_path), "work", "5") for _ in range(4)]
    _wait(workers)

    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert events[0]["event"] == "enter" and len(events) == 1 + 4 * 5 * 2
    inside = None
    for event in events[1:]:  # after the dead holder: strictly enter/exit pairs of one process
        if event["event"] == "enter":
            assert inside is None, f"{event['pid']} entered while {inside} held the lock"
            inside = event["pid"]
        else:
            assert inside == event["pid"]
            inside = None
    client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    leftovers = [m.name for m in client.search_registered_models(filter_string=f"name LIKE '{lock_name(name)}%'")]
    assert leftovers == []


def test_concurrent_promotions_end_with_the_best_version_as_champion(tracking, tmp_path):
    name = f"promote-test-{os.getpid()}"
    client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    client.create_registered_model(name)
    run_id = mlflow.MlflowClient(tracking_uri=tracking).create_run(
        mlflow.MlflowClient(tracking_uri=tracking).create_experiment(f"exp-{name}")).info.run_id
    accuracies = {}
    for accuracy in (0.40, 0.55, 0.45, 0.50):
        version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id).version
        for key, value in {"mlm_accuracy_512": accuracy, "nsp_accuracy_512": 0.7}.items():
            client.set_model_version_tag(name, version, f"metric.{key}", str(value))
        accuracies[str(version)] = accuracy
    doomed = _spawn(WORKER, tracking, name, str(tmp_path / "doomed.jsonl"), "die", "0")
    doomed.wait(timeout=120)
    promoters = [_spawn(PROMOTER, tracking, name, version) for version in accuracies]
    _wait(promoters)

    best = max(accuracies, key=accuracies.get)
    assert alias_version(client, name, CHAMPION) == best
    for version in accuracies:  # every decision is recorded on its version
        assert client.get_model_version(name, version).tags[DECISION_TAG] in ("promoted", "kept")
    assert client.get_model_version(name, best).tags[DECISION_TAG] == "promoted"
