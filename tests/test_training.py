"""train_phase end to end on a tiny model: it learns, it is deterministic, it refuses wrong inputs."""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from components.core import models
from components.core.errors import BertpipeError
from components.training.phase import train_phase
from components.training.settings import TrainingSettings
from tests.instance_factory import make_data, make_vocab

FAST = {"max_seq_length": 64, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "warmup_steps": 2, "logging_steps": 2}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    vocab = make_vocab(str(root / "vocab"), vocab_size=1000)
    data64 = make_data(str(root / "data64"), vocab, max_seq_length=64, shards={"train": [64, 64], "dev": [16], "test": [16]})
    return root, vocab, data64


def weights(model_uri: str) -> dict:
    return load_file(f"{model_uri}/model.safetensors")


def test_thirty_steps_lower_the_loss_and_publish_a_self_contained_model(inputs, tmp_path):
    root, vocab, data = inputs
    summary = train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(max_steps=30, eval_steps=15, max_eval_batches=2, **FAST))
    losses = [row["loss"] for row in summary["history"] if "loss" in row]
    assert len(losses) == 15 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5
    dev = [row for row in summary["history"] if "dev_loss" in row]
    assert [row["step"] for row in dev] == [15, 30]
    model_dir = tmp_path / "out" / "model"
    assert summary["model_uri"] == str(model_dir) and summary["global_batch_size"] == 8 and summary["steps"] == 30
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "vocab_info.json"} <= {p.name for p in model_dir.iterdir()}
    assert models.load_model(str(model_dir)).config.vocab_size == 1000
    on_disk = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert on_disk["final_loss"] == losses[-1] and on_disk["tokens_per_second"] > 0
    assert (tmp_path / "out" / "plots" / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    learning_rates = [row["learning_rate"] for row in summary["history"] if "learning_rate" in row]
    assert learning_rates[0] == pytest.approx(1e-3)  # warmup done after 2 steps
    assert learning_rates[1] == pytest.approx(1e-3 * (1 - 2 / 28)) and learning_rates[-1] == 0.0


def test_same_seed_gives_identical_weights(inputs, tmp_path):
    root, vocab, data = inputs
    runs = [train_phase(data, vocab, str(tmp_path / name), settings=TrainingSettings(max_steps=6, seed=seed, **FAST)) for name, seed in (("a", 7), ("b", 7), ("c", 8))]
    a, b, c = (weights(run["model_uri"]) for run in runs)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_phase_two_starts_from_phase_one_weights_with_a_fresh_schedule(inputs, tmp_path):
    root, vocab, data = inputs
    first = train_phase(data, vocab, str(tmp_path / "p64"), settings=TrainingSettings(max_steps=4, **FAST))
    data128 = make_data(str(tmp_path / "data128"), vocab, max_seq_length=128, shards={"train": [16], "dev": [4], "test": [4]})
    second = train_phase(data128, vocab, str(tmp_path / "p128"), settings=TrainingSettings(init_model=first["model_uri"], max_steps=2, **{**FAST, "max_seq_length": 128}))
    assert second["history"][0]["learning_rate"] == pytest.approx(1e-3)  # after warmup step 2 of 2: the peak, not phase one's decayed value
    assert second["model_shape"] == first["model_shape"] and second["resumed_from"] is None
    before, after = weights(first["model_uri"]), weights(second["model_uri"])
    moved = [(after[k] - before[k]).abs().max().item() for k in before]
    assert 0 < max(moved) < 0.05


def test_refuses_data_for_another_length_or_vocab(inputs, tmp_path):
    root, vocab, data = inputs
    with pytest.raises(BertpipeError, match="made with max_seq_length 64, expected 512"):
        train_phase(data, vocab, str(tmp_path / "o"), settings=TrainingSettings(max_seq_length=512, max_steps=1))
    other_vocab = make_vocab(str(tmp_path / "vocab"), vocab_size=900)
    with pytest.raises(BertpipeError, match="made with another vocab"):
        train_phase(data, other_vocab, str(tmp_path / "o"), settings=TrainingSettings(max_steps=1, max_seq_length=64))
    with pytest.raises(BertpipeError, match=re.escape("train-phase: max_steps=0: must be at least 1; optimizer='sgd': must be one of adamw, lamb")):
        train_phase(data, vocab, str(tmp_path / "o"), settings=TrainingSettings(max_steps=0, max_seq_length=64, optimizer="sgd"))
    assert not (tmp_path / "o" / "model").exists()


def save_tiny_model(folder, *, dropout: float = 0.1, poison: bool = False) -> str:
    torch.manual_seed(11)
    model = models.build_model("tiny", 1000)
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = dropout
    if poison:
        with torch.no_grad():
            model.bert.encoder.layer[0].output.dense.weight[0, 0] = float("nan")
    model.save_pretrained(str(folder))
    return str(folder)


def test_gradient_accumulation_equals_one_large_batch(inputs, tmp_path):
    root, vocab, data = inputs
    init = save_tiny_model(tmp_path / "init", dropout=0.0)
    common = {**FAST, "init_model": init, "max_steps": 3, "logging_steps": 1}
    large = train_phase(data, vocab, str(tmp_path / "large"), settings=TrainingSettings(**{**common, "per_device_train_batch_size": 8}))
    accumulated = train_phase(data, vocab, str(tmp_path / "acc"), settings=TrainingSettings(**{**common, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}))
    assert accumulated["global_batch_size"] == 8
    assert [r["loss"] for r in accumulated["history"]] == pytest.approx([r["loss"] for r in large["history"]], rel=1e-5)
    a, b = weights(large["model_uri"]), weights(accumulated["model_uri"])
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_lamb_with_polynomial_decay_trains(inputs, tmp_path):
    root, vocab, data = inputs
    summary = train_phase(data, vocab, str(tmp_path / "lamb"), settings=TrainingSettings(max_steps=12, optimizer="lamb", lr_scheduler_type="polynomial", lr_power=2.0, **{**FAST, "learning_rate": 0.1}))
    losses = [row["loss"] for row in summary["history"]]
    assert min(losses[2:]) < losses[0] - 0.4
    assert summary["history"][1]["learning_rate"] == pytest.approx(0.1 * (1 - 2 / 10) ** 2)


def test_nan_loss_stops_with_the_step_and_publishes_nothing(inputs, tmp_path):
    root, vocab, data = inputs
    init = save_tiny_model(tmp_path / "init", poison=True)
    with pytest.raises(BertpipeError, match=r"training diverged at step 1: loss nan.*last good checkpoint: none; lower learning_rate"):
        train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(init_model=init, max_steps=3, **FAST))
    assert not (tmp_path / "out" / "model").exists()

