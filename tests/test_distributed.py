"""DDP under torchrun on CPU (gloo, 2 processes), started the way the KFP task starts it:
train_phase with LaunchSettings(processes=2). Disjoint shards, one published model, the global batch logged."""

import json

import pytest
import torch
from safetensors.torch import load_file

from components.training.phase import train_phase
from components.training.settings import LaunchSettings, TrainingSettings
from tests.instance_factory import make_data, make_vocab


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_two_cpu_processes_train_one_model(tmp_path):
    vocab = make_vocab(str(tmp_path / "vocab"), vocab_size=1000)
    data = make_data(str(tmp_path / "data"), vocab, max_seq_length=64, shards={"train": [24, 24, 24, 24], "dev": [8], "test": [8]})
    settings = TrainingSettings(max_steps=6, per_device_train_batch_size=4, gradient_accumulation_steps=2, learning_rate=1e-3, warmup_steps=1,
                                logging_steps=2, save_steps=3, eval_steps=3, max_seq_length=64)
    # The summary is the one rank 0 published (read from the output folder), not the ranks' stdout.
    summary = train_phase(data, vocab, str(tmp_path / "out"), settings=settings, launch=LaunchSettings(processes=2))
    assert (summary["world_size"], summary["settings"]["global_batch_size"], summary["steps"]) == (2, 16, 6)
    state = json.loads((tmp_path / "out" / "checkpoints" / "step-000006" / "trainer_state.json").read_text())
    assert state["positions"] == [48, 48]  # 6 steps x 2 micro-batches x 4 instances, on each rank
    assert len(torch.load(tmp_path / "out" / "checkpoints" / "step-000006" / "rng.pt", weights_only=True)) == 2
    weights = load_file(str(tmp_path / "out" / "model" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
