"""The compiled pipeline YAML: its tasks, their wiring and per-task settings."""

import pytest
import yaml
from kfp import compiler

from pipelines.bert_pretraining import bert_pretraining


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    compiler.Compiler().compile(bert_pretraining, str(path))
    spec = yaml.safe_load(path.read_text())
    # Key tasks by their display name: train-phase-128 reads better than train-phase-2.
    return {task["taskInfo"]["name"]: task for task in spec["root"]["dag"]["tasks"].values()}, spec


def test_the_dag_has_the_seven_tasks(tasks):
    by_name, _ = tasks
    assert sorted(by_name) == [
        "create-pretraining-data-128", "create-pretraining-data-512", "evaluate", "export-vocab",
        "register-model", "train-phase-128", "train-phase-512",
    ]


def test_wiring_follows_the_recipe(tasks):
    by_name, spec = tasks
    key_to_name = {key: task["taskInfo"]["name"] for key, task in spec["root"]["dag"]["tasks"].items()}

    def upstream(name):
        return sorted(key_to_name[key] for key in by_name[name].get("dependentTasks", []))

    assert upstream("export-vocab") == []
    assert upstream("create-pretraining-data-128") == ["export-vocab"]
    assert upstream("train-phase-128") == ["create-pretraining-data-128", "export-vocab"]
    assert upstream("train-phase-512") == ["create-pretraining-data-512", "export-vocab", "train-phase-128"]
    assert upstream("evaluate") == ["create-pretraining-data-128", "create-pretraining-data-512", "train-phase-512"]
    assert upstream("register-model") == ["evaluate", "train-phase-512"]
    # Phase 512 starts from phase 128's model; evaluation and registration use phase 512's.
    init = by_name["train-phase-512"]["inputs"]["parameters"]["init_model"]["taskOutputParameter"]
    assert key_to_name[init["producerTask"]] == "train-phase-128"
    for name in ("evaluate", "register-model"):
        model = by_name[name]["inputs"]["parameters"]["model_uri"]["taskOutputParameter"]
        assert key_to_name[model["producerTask"]] == "train-phase-512"


def test_sequence_lengths_are_fixed_per_task(tasks):
    by_name, _ = tasks
    for name, length in (("create-pretraining-data-128", 128), ("create-pretraining-data-512", 512),
                         ("train-phase-128", 128), ("train-phase-512", 512)):
        assert by_name[name]["inputs"]["parameters"]["max_seq_length"]["runtimeValue"]["constant"] == length


def test_training_and_registration_are_never_cached(tasks):
    by_name, _ = tasks
    for name in ("train-phase-128", "train-phase-512", "register-model"):
        assert by_name[name]["cachingOptions"] == {}
    assert by_name["create-pretraining-data-128"]["cachingOptions"] == {"enableCache": True}


def test_pipeline_parameters_have_defaults_except_the_artifact_root(tasks):
    _, spec = tasks
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert [name for name, p in parameters.items() if not p.get("isOptional")] == ["artifact_root"]
    assert parameters["tracking_uri"]["defaultValue"] == "sqlite:///mlflow.db"
