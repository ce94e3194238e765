"""Each KFP component on its own under kfp.local, chained by hand, then the whole pipeline.

The components run as real subprocesses of this interpreter (SubprocessRunner
without a venv), exactly as `bertpipe run` runs them.
"""

import json
from pathlib import Path

import kfp.local
import mlflow
import pytest

from components import kfp_components as steps
from components.instances import read_manifest

TINY_DATA = dict(masked_lm_prob=0.15, short_seq_prob=0.1, dupe_factor=1, do_whole_word_mask=True, dev_fraction=0.05, test_fraction=0.05, seed=7)
TINY_TRAIN = dict(model_size="tiny", batch_size=8, learning_rate=1e-3, warmup_steps=2, seed=3)


@pytest.fixture(scope="module")
def local_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfp")
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "kfp-root"))
    common = dict(artifact_root=str(root / "artifacts"), pipeline_run_id="component-test", tracking_uri=f"sqlite:///{root}/mlflow.db", experiment="components")
    return root, common


@pytest.fixture(scope="module")
def chained(local_env):
    """vocab -> data(128), data(512) -> phase 128 -> phase 512 -> evaluate -> register, one component at a time."""
    _, common = local_env
    tracking = {k: common[k] for k in ("tracking_uri", "experiment")}
    where = {k: common[k] for k in ("artifact_root", "pipeline_run_id")}
    vocab = steps.export_vocab(vocab_source="", corpus="demo", vocab_size=1500, lowercase="auto", **common)
    data = {
        length: steps.create_pretraining_data(corpus="demo", vocab=vocab.outputs["vocab"], max_seq_length=length, max_predictions_per_seq=predictions, **TINY_DATA, **common)
        for length, predictions in ((128, 20), (512, 80))
    }
    phase1 = steps.train_phase(data=data[128].outputs["data"], vocab=vocab.outputs["vocab"], init_model="", max_seq_length=128, max_steps=6, **TINY_TRAIN, **common)
    phase2 = steps.train_phase(data=data[512].outputs["data"], vocab=vocab.outputs["vocab"], init_model=phase1.output, max_seq_length=512, max_steps=2, **TINY_TRAIN, **common)
    evaluation = steps.evaluate(model_uri=phase2.output, data_128=data[128].outputs["data"], data_512=data[512].outputs["data"], **common)
    registration = steps.register_model(model_uri=phase2.output, metrics_json=evaluation.outputs["Output"], registered_model_name="component-test",
                                        pipeline_run_id=where["pipeline_run_id"], **tracking)
    return dict(vocab=vocab, data=data, phase1=phase1, phase2=phase2, evaluation=evaluation, registration=registration)


def test_vocab_component_publishes_its_folder(chained, local_env):
    root, _ = local_env
    artifact = chained["vocab"].outputs["vocab"]
    assert artifact.metadata["uri"] == str(root / "artifacts" / "runs" / "component-test" / "vocab")
    assert artifact.metadata["size"] == 1500
    assert (Path(artifact.metadata["uri"]) / "vocab.txt").read_text().count("\n") == 1500


def test_data_components_write_both_lengths(chained):
    for length in (128, 512):
        uri = chained["data"][length].outputs["data"].metadata["uri"]
        manifest = read_manifest(uri)
        assert manifest["max_seq_length"] == length
        assert all(manifest["splits"][split]["num_instances"] > 0 for split in ("train", "dev", "test"))


def test_phase_two_starts_from_phase_one(chained):
    phase1_model = Path(chained["phase1"].output)
    phase2_model = Path(chained["phase2"].output)
    assert phase1_model.name == phase2_model.name == "model"
    assert phase1_model.parent.name == "phase-128" and phase2_model.parent.name == "phase-512"
    assert (phase2_model / "model.safetensors").is_file()
    summary = json.loads((phase2_model.parent / "training_summary.json").read_text())
    assert summary["init_model"] == str(phase1_model)


def test_evaluation_component_reports_both_lengths(chained):
    metrics = json.loads(chained["evaluation"].outputs["Output"])
    for length in (128, 512):
        assert 0.0 <= metrics[f"mlm_accuracy_{length}"] <= 1.0
        assert 0.0 <= metrics[f"nsp_accuracy_{length}"] <= 1.0
    assert "| " in Path(chained["evaluation"].outputs["report"].path).read_text()


def test_register_component_creates_a_version(chained, local_env):
    root, common = local_env
    assert chained["registration"].output == "component-test/1"
    client = mlflow.MlflowClient(common["tracking_uri"])
    version = client.get_model_version("component-test", "1")
    assert version.tags["bertpipe.pipeline_run_id"] == "component-test"
