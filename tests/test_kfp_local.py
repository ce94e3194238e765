"""Each KFP component alone under kfp.local, as a one-task pipeline whose input artifacts are imported.

The data step is the pretraining-data sub-pipeline (plan, one task per shard, merge).

The components run as real subprocesses of this interpreter (SubprocessRunner
without a venv), exactly as `bertpipe run` runs them. Each one reads what the
previous one wrote (known URIs: pipeline_run_id is a parameter, and vocab and data are found
in the content-keyed cache folder).
"""

import json
import subprocess
import sys
from pathlib import Path

import kfp.local
import mlflow
import pytest
from kfp import dsl

from pipelines import kfp_components as steps
from components.core.instances import read_manifest
from components.core.storage.paths import MARKER_FILES
from pipelines.bert_pretraining import pretraining_data

RUN_ID = "component-test"
# 0.5 MB shards: the demo corpus's train split fans out over several shard tasks.
TINY_DATA = dict(masked_lm_prob=0.15, short_seq_prob=0.1, dupe_factor=1, do_whole_word_mask=True, dev_fraction=0.05, test_fraction=0.05, seed=7, shard_size_mb=0.5)
TINY_TRAIN = dict(model_size="tiny", per_device_train_batch_size=8, learning_rate=1e-3, warmup_steps=2, save_steps=3, seed=3)
PROMOTION = dict(promotion_metric="mlm_accuracy_512", promotion_margin=0.0, nsp_tolerance=0.01, promotion_floor=0.0, promotion_over_baseline=False, promotion_dry_run=False)


def run_alone(component, artifacts: dict | None = None, **parameters) -> None:
    """Run `component` as a one-task pipeline; `artifacts` maps input names to (artifact class, URI)."""

    @dsl.pipeline(name=f"alone-{component.name}")
    def alone():
        imported = {
            name: dsl.importer(artifact_uri=uri, artifact_class=kind, metadata={"uri": uri}).output for name, (kind, uri) in (artifacts or {}).items()
        }
        component(**imported, **parameters)

    alone()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Runs the components in pipeline order; returns where they wrote."""
    root = tmp_path_factory.mktemp("kfp")
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "kfp-root"))
    common = dict(artifact_root=str(root / "artifacts"), pipeline_run_id=RUN_ID, tracking_uri=f"sqlite:///{root}/mlflow.db", experiment="components")
    out = root / "artifacts" / "runs" / RUN_ID
    keyed = {key: common[key] for key in ("artifact_root", "tracking_uri", "experiment")}  # no run id: content-keyed folders

    run_alone(steps.export_vocab, vocab_source="", corpus="demo", vocab_size=1500, lowercase="auto", fingerprint="", **keyed)
    vocab = (dsl.Artifact, cached(out, "vocab"))
    cli("export-vocab", "--corpus", "demo", "--vocab-size", "1500", "--output-uri", str(out / "vocab-cli"), "--tracking-uri", common["tracking_uri"],
        "--experiment", "cli-side")
    for length, predictions in ((128, 20), (512, 80)):
        run_alone(pretraining_data, {"vocab": vocab}, corpus="demo", max_seq_length=length, max_predictions_per_seq=predictions, fingerprint="", **TINY_DATA, **keyed)
    data = {length: (dsl.Dataset, cached(out, f"data-{length}")) for length in (128, 512)}
    run_alone(steps.train_phase, {"data": data[128], "vocab": vocab}, init_model="", max_seq_length=128, max_steps=6, **TINY_TRAIN, **common)
    cli("train-phase", "--data-uri", data[128][1], "--vocab-uri", vocab[1], "--output-uri", str(out / "phase-128-cli"), "--max-seq-length", "128",
        "--max-steps", "6", *(flag for name, value in TINY_TRAIN.items() for flag in ("--" + name.replace("_", "-"), str(value))), "--tracking-uri", "")
    run_alone(steps.train_phase, {"data": data[512], "vocab": vocab}, init_model=str(out / "phase-128" / "model"), max_seq_length=512, max_steps=2, **TINY_TRAIN, **common)
    model = str(out / "phase-512" / "model")
    run_alone(steps.evaluate, {"data_128": data[128], "data_512": data[512]}, model_uri=model, registered_model_name="component-test", **common)
    data_uris = json.dumps({length: uri for length, (_, uri) in data.items()})
    tracking_flags = ["--tracking-uri", common["tracking_uri"], "--experiment", common["experiment"], "--pipeline-run-id", RUN_ID]
    cli("evaluate", "--model-uri", model, "--data-uris", data_uris, "--output-uri", str(out / "evaluation-cli"),
        "--registered-model-name", "component-test", *tracking_flags)
    registry = {key: common[key] for key in ("pipeline_run_id", "tracking_uri", "experiment")}
    run_alone(steps.register_model, {"data_128": data[128], "data_512": data[512]}, model_uri=model, evaluation_uri=str(out / "evaluation"),
              registered_model_name="component-test", **PROMOTION, **registry)
    cli("register", "--model-uri", model, "--evaluation-uri", str(out / "evaluation-cli"), "--data-uris", data_uris, "--registered-model-name",
        "component-test", "--promotion-dry-run", "--report-uri", str(out / "report-cli.md"), *tracking_flags)
    return out, common


def cached(out, name: str) -> str:
    """The one content-keyed folder `name`-<key> of the artifact root that holds the run folder `out`."""
    (folder,) = (out.parents[1] / "cache").glob(f"{name}-*")
    return str(folder)


def cli(*args) -> None:
    """The same step through `bertpipe <step>`, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_vocab_component_writes_the_vocab_folder(run):
    out, _ = run
    vocab = cached(out, "vocab")
    info = json.loads(open(f"{vocab}/vocab_info.json").read())
    assert info["size"] == 1500 and len(info["content_key"]) == 20 and vocab.endswith(info["content_key"])
    assert open(f"{vocab}/vocab.txt").read().count("\n") == 1500


def test_the_vocab_component_and_the_cli_write_the_same_bytes(run):
    out, _ = run
    kfp_vocab, cli_vocab = Path(cached(out, "vocab")), out / "vocab-cli"
    kfp_files, cli_files = (sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name not in MARKER_FILES)
                            for folder in (kfp_vocab, cli_vocab))  # the publication markers hold the time
    assert kfp_files == cli_files and len(kfp_files) >= 3
    assert all((kfp_vocab / name).read_bytes() == (cli_vocab / name).read_bytes() for name in kfp_files)


def test_the_training_component_and_the_cli_train_the_same_weights(run):
    out, _ = run
    kfp_model, cli_model = out / "phase-128" / "model", out / "phase-128-cli" / "model"
    assert (kfp_model / "model.safetensors").read_bytes() == (cli_model / "model.safetensors").read_bytes()
    assert (kfp_model / "config.json").read_bytes() == (cli_model / "config.json").read_bytes()


def test_data_components_write_both_lengths(run):
    out, _ = run
    for length in (128, 512):
        manifest = read_manifest(cached(out, f"data-{length}"))
        assert manifest["max_seq_length"] == length
        assert all(manifest["splits"][split]["num_instances"] > 0 for split in ("train", "dev", "test"))
        assert len(manifest["splits"]["train"]["shards"]) >= 2


def test_phase_two_starts_from_phase_one(run):
    out, _ = run
    phase1 = json.loads((out / "phase-128" / "training_summary.json").read_text())
    phase2 = json.loads((out / "phase-512" / "training_summary.json").read_text())
    assert phase1["steps"] == 6 and phase2["steps"] == 2
    assert phase2["settings"]["init_model"] == str(out / "phase-128" / "model")
    assert (out / "phase-512" / "model" / "model.safetensors").is_file()
    # save_steps=3: the 6-step phase kept a checkpoint at step 3 besides the final one.
    assert sorted(p.name for p in (out / "phase-128" / "checkpoints").iterdir() if not p.name.startswith(".")) == ["step-000003", "step-000006"]


def test_evaluation_component_reports_both_lengths(run):
    out, _ = run
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())["metrics"]
    for length in (128, 512):
        assert 0.0 <= metrics[f"mlm_accuracy_{length}"] <= 1.0
        assert 0.0 <= metrics[f"nsp_accuracy_{length}"] <= 1.0
    assert "| mlm_accuracy |" in (out / "evaluation" / "report.md").read_text()


def test_register_component_creates_the_first_champion(run):
    out, common = run
    client = mlflow.MlflowClient(common["tracking_uri"])
    version = client.get_model_version("component-test", "1")
    assert version.tags["bertpipe.phase1_steps"] == "6"
    assert len(version.tags["bertpipe.data_512_manifest_sha256"]) == 64
    assert str(client.get_model_version_by_alias("component-test", "champion").version) == "1"
    report = (out / "report.md").read_text()
    assert "became **champion**" in report and "![phase 128](phase-128/plots/loss_curve.png)" in report


def test_evaluate_and_register_do_the_same_through_the_cli(run):
    out, common = run
    assert (out / "evaluation-cli" / "metrics.json").read_text() == (out / "evaluation" / "metrics.json").read_text()
    client = mlflow.MlflowClient(common["tracking_uri"])
    decided = ("bertpipe.promotion.", "bertpipe.champion.")
    kfp_tags, cli_tags = ({key: value for key, value in client.get_model_version("component-test", version).tags.items() if not key.startswith(decided)}
                          for version in ("1", "2"))
    assert cli_tags == kfp_tags and len(kfp_tags) >= 12
    assert "(dry run: no alias moved)" in (out / "report-cli.md").read_text()
