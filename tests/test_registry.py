"""Registering a trained BERT in MLflow (embedded sqlite store) and getting it back out."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import time
from pathlib import Path

import mlflow
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining

from components.core.errors import BertpipeError
from components.core.model_store import download_model, resolve_version
from components.registry.register import pip_requirements, register_model
from components.core.tracking import PIPELINE_RUN_TAG, Tracking
from components.vocab.export import VocabSettings, export_vocab

NAME = "tiny-bert"
METRICS = {"mlm_accuracy_512": 0.25, "nsp_accuracy_512": 0.625}
TAGS = {"bertpipe.data_manifest_sha256": "d" * 64, "bertpipe.phase1_steps": "90", "bertpipe.phase2_steps": "10"}


def make_model_folder(root: Path, vocab: Path, seed: int = 0) -> Path:
    """A tiny BertForPreTraining folder laid out like the trainer's output."""
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=json.loads((vocab / "vocab_info.json").read_text())["size"], hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertForPreTraining(config).save_pretrained(root)
    for path in vocab.iterdir():
        shutil.copy(path, root / path.name)
    return root


def sqlite_tracking(root: Path, pipeline_run_id: str = "pipeline-run-1") -> Tracking:
    """A tracking store under root, with its artifacts under root too (not ./mlruns)."""
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.MlflowClient(tracking_uri=uri).create_experiment("bertpipe-test", artifact_location=str(root / "artifacts"))
    return Tracking(tracking_uri=uri, experiment="bertpipe-test", pipeline_run_id=pipeline_run_id)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vocab") / "vocab"
    export_vocab(str(folder), corpus="demo", settings=VocabSettings(vocab_size=1000))
    return folder


@pytest.fixture(scope="module")
def registered(tmp_path_factory, vocab):
    root = tmp_path_factory.mktemp("registry")
    model = make_model_folder(root / "model", vocab)
    tracking = sqlite_tracking(root)
    result = register_model(str(model), NAME, tracking=tracking, tags=TAGS, metrics=METRICS)
    return {"root": root, "model": model, "tracking": tracking, "result": result}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_register_returns_the_new_version(registered):
    result = registered["result"]
    assert result["name"] == NAME and result["version"] == "1"
    assert result["model_uri"] == f"models:/{NAME}/1"
    run = mlflow.MlflowClient(tracking_uri=registered["tracking"].tracking_uri).get_run(result["run_id"])
    assert run.data.metrics == METRICS
    assert run.data.tags[PIPELINE_RUN_TAG] == "pipeline-run-1"


def test_registered_model_loads_as_fill_mask_pipeline_with_the_trained_weights(registered):
    mlflow.set_tracking_uri(registered["tracking"].tracking_uri)
    fill = mlflow.transformers.load_model(f"models:/{NAME}/1")
    predictions = fill("the king of [MASK] is dead .", top_k=3)
    assert len(predictions) == 3

    reference = BertForMaskedLM.from_pretrained(registered["model"]).eval()
    inputs = fill.tokenizer("the king of [MASK] is dead .", return_tensors="pt")
    position = int((inputs["input_ids"][0] == fill.tokenizer.mask_token_id).nonzero()[0])
    with torch.no_grad():
        expected = reference(**inputs).logits[0, position].topk(3).indices.tolist()
    assert [p["token"] for p in predictions] == expected
    assert predictions[0]["sequence"].startswith("the king of ")


def test_version_tags_trace_data_vocab_phases_and_metrics(registered, vocab):
    client = mlflow.MlflowClient(tracking_uri=registered["tracking"].tracking_uri)
    tags = client.get_model_version(NAME, "1").tags
    assert tags[PIPELINE_RUN_TAG] == "pipeline-run-1"
    assert tags["bertpipe.vocab_sha256"] == json.loads((vocab / "vocab_info.json").read_text())["sha256"]
    assert tags["bertpipe.source_model_uri"] == str(registered["model"])
    assert {key: float(value) for key, value in tags.items() if key.startswith("metric.")} == {f"metric.{k}": v for k, v in METRICS.items()}
    assert all(tags[key] == value for key, value in TAGS.items())


def test_download_rebuilds_the_trainers_folder_bit_for_bit(registered, tmp_path):
    client = mlflow.MlflowClient(tracking_uri=registered["tracking"].tracking_uri)
    client.set_registered_model_alias(NAME, "reviewed", "1")
    result = download_model(f"models:/{NAME}@reviewed", str(tmp_path / "champion"), tracking_uri=registered["tracking"].tracking_uri)
    assert result == {"name": NAME, "version": "1", "model_uri": f"models:/{NAME}/1", "folder": str(tmp_path / "champion")}

    original = BertForPreTraining.from_pretrained(registered["model"]).state_dict()
    restored, info = BertForPreTraining.from_pretrained(tmp_path / "champion", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert restored.state_dict().keys() == original.keys()
    assert all(torch.equal(restored.state_dict()[key], original[key]) for key in original)
    assert (tmp_path / "champion" / "vocab_info.json").read_text() == (registered["model"] / "vocab_info.json").read_text()
    assert (tmp_path / "champion" / "tokenizer.json").is_file()
    vocab_sha256 = hashlib.sha256((tmp_path / "champion" / "vocab.txt").read_bytes()).hexdigest()
    assert vocab_sha256 == json.loads((registered["model"] / "vocab_info.json").read_text())["sha256"]


def test_resolve_version_accepts_numbers_and_aliases_and_refuses_other_uris(registered):
    uri = registered["tracking"].tracking_uri
    assert resolve_version(f"models:/{NAME}/7", tracking_uri=uri) == (NAME, "7")
    with pytest.raises(BertpipeError, match="models:/NAME/VERSION"):
        resolve_version("runs:/abc/model", tracking_uri=uri)
    with pytest.raises(BertpipeError, match="nonexistent"):
        resolve_version(f"models:/{NAME}@nonexistent", tracking_uri=uri)


@pytest.mark.parametrize("breakage", ["no-weights", "masked-lm-only", "missing-folder"])
def test_a_folder_that_does_not_load_registers_nothing(registered, vocab, tmp_path, breakage):
    folder = tmp_path / "broken"
    if breakage == "no-weights":
        make_model_folder(folder, vocab)
        (folder / "model.safetensors").unlink()
    elif breakage == "masked-lm-only":
        make_model_folder(folder, vocab)
        BertForMaskedLM.from_pretrained(folder).save_pretrained(folder)
    with pytest.raises(BertpipeError, match="broken"):
        register_model(str(folder), "never-registered", tracking=registered["tracking"])
    client = mlflow.MlflowClient(tracking_uri=registered["tracking"].tracking_uri)
    assert client.search_registered_models(filter_string="name = 'never-registered'") == []


def test_unreachable_tracking_server_fails_fast_naming_it_and_a_rerun_then_registers(registered, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with pytest.raises(BertpipeError, match=f"MLflow at {dead}"):
        register_model(str(registered["model"]), NAME, tracking=Tracking(tracking_uri=dead, experiment="bertpipe-test"))
    assert time.monotonic() - started < 20

    again = register_model(str(registered["model"]), NAME, tracking=registered["tracking"])
    assert again["version"] == "2"


def test_bad_registered_model_name_is_refused(registered):
    with pytest.raises(BertpipeError, match="registered model name"):
        register_model(str(registered["model"]), "bad/name", tracking=registered["tracking"])


def test_pip_requirements_pin_the_runtime_and_leave_out_torchvision():
    requirements = pip_requirements()
    assert [r.split("==")[0] for r in requirements] == ["mlflow", "transformers", "torch", "tokenizers", "safetensors"]
    assert "torch==2.13.0" in requirements and "mlflow==3.17.2" in requirements
