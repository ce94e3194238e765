"""The compiled pipeline YAML, as `bertpipe compile` writes it: its tasks, their wiring and per-task settings."""

import json

import pytest
import yaml

from pipelines.cli import main


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    assert main(["compile", "--output", str(path)]) == 0
    pipeline_spec, _platform_spec = yaml.safe_load_all(path.read_text())
    return pipeline_spec


def named(dag):
    """Tasks keyed by display name (train-phase-128 reads better than train-phase-2), and key -> name."""
    names = {key: task["taskInfo"]["name"] for key, task in dag["tasks"].items()}
    return {names[key]: task for key, task in dag["tasks"].items()}, names


def test_the_dag_has_every_step(spec):
    tasks, _ = named(spec["root"]["dag"])
    assert sorted(tasks) == [
        "create-pretraining-data-128", "create-pretraining-data-512", "evaluate", "export-vocab", "fingerprint-inputs",
        "probe", "register-model", "resolve-run", "train-phase-128", "train-phase-512",
    ]


def test_wiring_follows_the_recipe(spec):
    tasks, names = named(spec["root"]["dag"])

    def upstream(name):
        return sorted(names[key] for key in tasks[name].get("dependentTasks", []))

    assert upstream("fingerprint-inputs") == upstream("resolve-run") == []
    assert upstream("export-vocab") == ["fingerprint-inputs"]
    assert upstream("create-pretraining-data-128") == upstream("create-pretraining-data-512") == ["export-vocab", "fingerprint-inputs"]
    assert upstream("train-phase-128") == ["create-pretraining-data-128", "export-vocab", "resolve-run"]
    assert upstream("train-phase-512") == ["create-pretraining-data-512", "export-vocab", "resolve-run", "train-phase-128"]
    assert upstream("evaluate") == ["create-pretraining-data-128", "create-pretraining-data-512", "resolve-run", "train-phase-512"]
    assert upstream("probe") == ["resolve-run", "train-phase-512"]
    assert upstream("register-model") == ["create-pretraining-data-128", "create-pretraining-data-512", "evaluate", "probe", "resolve-run", "train-phase-512"]
    # Phase 512 starts from phase 128's model; evaluation and registration use phase 512's.
    init = tasks["train-phase-512"]["inputs"]["parameters"]["init_model"]["taskOutputParameter"]
    assert names[init["producerTask"]] == "train-phase-128"
    for name in ("evaluate", "probe", "register-model"):
        model = tasks[name]["inputs"]["parameters"]["model_uri"]["taskOutputParameter"]
        assert names[model["producerTask"]] == "train-phase-512"


def test_data_fans_out_one_task_per_shard(spec):
    tasks, _ = named(spec["root"]["dag"])
    data = spec["components"][tasks["create-pretraining-data-128"]["componentRef"]["name"]]["dag"]
    inner, names = named(data)
    assert sorted(inner) == ["for-loop-1", "merge-manifest", "plan-shards"]
    loop = inner["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("plan-pretraining-data-Output")
    assert loop["iteratorPolicy"] == {"parallelismLimit": 16}
    shard_tasks, _ = named(spec["components"][loop["componentRef"]["name"]]["dag"])
    assert list(shard_tasks) == ["create-shard"]
    # The merge waits for the whole loop and reads the shard records from the data folder: no fan-in of outputs.
    merge = inner["merge-manifest"]
    assert sorted(names[key] for key in merge["dependentTasks"]) == ["for-loop-1", "plan-shards"]  # the plan names the folder
    assert sorted(merge["inputs"]["parameters"]) == ["experiment", "tracking_uri"] and list(merge["inputs"]["artifacts"]) == ["data_folder"]


def test_sequence_lengths_are_fixed_per_task(spec):
    tasks, _ = named(spec["root"]["dag"])
    for name, length in (("create-pretraining-data-128", 128), ("create-pretraining-data-512", 512), ("train-phase-128", 128), ("train-phase-512", 512)):
        assert tasks[name]["inputs"]["parameters"]["max_seq_length"]["runtimeValue"]["constant"] == length


def test_data_is_cached_training_and_registration_are_not(spec):
    tasks, _ = named(spec["root"]["dag"])
    for name in ("train-phase-128", "train-phase-512", "evaluate", "probe", "register-model", "fingerprint-inputs", "resolve-run"):
        assert tasks[name]["cachingOptions"] == {}
    data, _ = named(spec["components"][tasks["create-pretraining-data-128"]["componentRef"]["name"]]["dag"])
    loop, _ = named(spec["components"][data["for-loop-1"]["componentRef"]["name"]]["dag"])
    for task in (tasks["export-vocab"], data["plan-shards"], loop["create-shard"], data["merge-manifest"]):
        assert task["cachingOptions"] == {"enableCache": True}


def test_no_run_id_reaches_the_vocab_and_data_tasks(spec):
    """KFP's cache keys on every input: the run id (or a task that passes it on) would make every vocab and data task a miss."""
    tasks, names = named(spec["root"]["dag"])
    placeholder = [name for name, task in tasks.items() if "pipeline_job" in json.dumps(task)]
    assert placeholder == ["resolve-run"]
    data = spec["components"][tasks["create-pretraining-data-128"]["componentRef"]["name"]]["dag"]
    loop = spec["components"][data["tasks"]["for-loop-1"]["componentRef"]["name"]]["dag"]
    cached = [tasks["export-vocab"], tasks["create-pretraining-data-128"], tasks["create-pretraining-data-512"], *data["tasks"].values(), *loop["tasks"].values()]
    for task in cached:
        text = json.dumps(task)
        assert "pipeline_job" not in text and "pipeline_run_id" not in text and "resolve-run" not in text, task["taskInfo"]["name"]
    # What keys them instead: the fingerprints of the inputs, made anew by an uncached task every run.
    assert tasks["export-vocab"]["inputs"]["parameters"]["fingerprint"]["taskOutputParameter"] == {"producerTask": "fingerprint-inputs", "outputParameterKey": "vocab"}
    assert tasks["create-pretraining-data-128"]["inputs"]["parameters"]["fingerprint"]["taskOutputParameter"] == {
        "producerTask": "fingerprint-inputs", "outputParameterKey": "corpus"}
    assert tasks["train-phase-128"]["inputs"]["parameters"]["pipeline_run_id"]["taskOutputParameter"]["producerTask"] == "resolve-run"


def test_a_run_can_resume_an_earlier_one(spec):
    assert spec["root"]["inputDefinitions"]["parameters"]["resume_run_id"]["defaultValue"] == ""
    tasks, _ = named(spec["root"]["dag"])
    assert tasks["resolve-run"]["inputs"]["parameters"]["resume_run_id"]["componentInputParameter"] == "resume_run_id"


def test_no_laptop_location_is_compiled_in(spec):
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert parameters["artifact_root"]["defaultValue"] == ""
    assert parameters["tracking_uri"]["defaultValue"] == ""
    assert parameters["promotion_metric"]["defaultValue"] == "mlm_accuracy_512"
    assert "sqlite" not in yaml.safe_dump(spec) and "bertpipe-artifacts" not in yaml.safe_dump(spec)


def test_compile_bakes_in_cluster_locations_and_refuses_local_ones(tmp_path, capsys):
    spec, _ = compile_with(tmp_path, "--artifact-root", "s3://team/bert", "--tracking-uri", "http://mlflow.ml:5000")
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert (parameters["artifact_root"]["defaultValue"], parameters["tracking_uri"]["defaultValue"]) == ("s3://team/bert", "http://mlflow.ml:5000")
    for flags, message in ((["--tracking-uri", "sqlite:///mlflow.db"], "tracking_uri='sqlite:///mlflow.db' is a store inside each pod"),
                           (["--artifact-root", "./bertpipe-artifacts"], "artifact_root='./bertpipe-artifacts' is a local folder")):
        assert main(["compile", "--output", str(tmp_path / "refused.yaml"), *flags]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "refused.yaml").exists()
    assert main(["compile", "--output", str(tmp_path / "nfs.yaml"), "--artifact-root", "/mnt/shared/bert", "--allow-local-storage"]) == 0


def compile_with(tmp_path, *flags):
    path = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(path), *flags]) == 0
    spec = next(yaml.safe_load_all(path.read_text()))
    tasks, _ = named(spec["root"]["dag"])
    return spec, tasks


def test_gpus_per_node_start_one_training_process_per_gpu(tmp_path):
    spec, tasks = compile_with(tmp_path, "--gpus-per-node", "8", "--gpu-image", "registry.example.com/ml/bertpipe-cuda:1")
    for name in ("train-phase-128", "train-phase-512"):
        parameters = tasks[name]["inputs"]["parameters"]
        assert parameters["processes"]["runtimeValue"]["constant"] == 8
        assert parameters["num_nodes"]["runtimeValue"]["constant"] == 1
        container = spec["deploymentSpec"]["executors"][tasks[name]["componentRef"]["name"].replace("comp-", "exec-")]["container"]
        assert container["image"] == "registry.example.com/ml/bertpipe-cuda:1"
        assert container["resources"]["accelerator"]["resourceCount"] == "8"


@pytest.mark.parametrize("num_nodes", ["1", "4"])
def test_evaluation_and_probe_run_on_one_gpu_in_the_training_pool(tmp_path, num_nodes):
    spec, tasks = compile_with(tmp_path, "--gpus-per-node", "8", "--num-nodes", num_nodes, "--gpu-image", "registry.example.com/ml/bertpipe-cuda:1",
                               "--node-selector", "pool=gpu")
    platform = list(yaml.safe_load_all((tmp_path / "pipeline.yaml").read_text()))[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("evaluate", "probe"):
        executor = tasks[name]["componentRef"]["name"].replace("comp-", "exec-")
        container = spec["deploymentSpec"]["executors"][executor]["container"]
        assert container["image"] == "registry.example.com/ml/bertpipe-cuda:1"
        assert (container["resources"]["accelerator"]["resourceType"], container["resources"]["accelerator"]["resourceCount"]) == ("nvidia.com/gpu", "1")
        assert (container["resources"]["resourceCpuLimit"], container["resources"]["resourceMemoryLimit"]) == ("4", "16Gi")
        assert platform[executor]["nodeSelector"]["labels"] == {"pool": "gpu"}
        assert platform[executor]["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
        assert tasks[name]["retryPolicy"]["maxRetryCount"] == 2 and tasks[name]["cachingOptions"] == {}
    # The CPU steps stay in the CPU pool.
    vocab = spec["deploymentSpec"]["executors"][tasks["export-vocab"]["componentRef"]["name"].replace("comp-", "exec-")]["container"]
    assert "accelerator" not in vocab["resources"] and "bertpipe-cpu" in vocab["image"]


def test_multi_node_phases_launch_a_trainjob_from_a_cpu_pod(tmp_path):
    spec, tasks = compile_with(tmp_path, "--num-nodes", "4", "--gpus-per-node", "8", "--training-retries", "5")
    # The launcher gets the training retries: each retry starts a new TrainJob attempt that resumes.
    assert tasks["train-phase-128"]["retryPolicy"]["maxRetryCount"] == 5
    assert tasks["export-vocab"]["retryPolicy"]["maxRetryCount"] == 2
    parameters = tasks["train-phase-128"]["inputs"]["parameters"]
    template = json.loads(parameters["trainjob_template"]["runtimeValue"]["constant"])
    assert template["kind"] == "TrainJob"
    assert template["spec"]["trainer"]["numNodes"] == 4 and template["spec"]["trainer"]["numProcPerNode"] == 8
    container = spec["deploymentSpec"]["executors"][tasks["train-phase-128"]["componentRef"]["name"].replace("comp-", "exec-")]["container"]
    assert "accelerator" not in container["resources"]
    assert "bertpipe-cpu" in container["image"]
