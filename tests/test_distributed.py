"""DDP under torchrun on CPU (gloo, 2 processes), started the way the KFP task starts it: train_phase with
LaunchSettings(processes=2), i.e. launch.torchrun_command(rank_arguments(...), 2). Synchronisation is proved by
weights: two ranks of batch b end where one process of batch 2b ends, and the same command with DDP's
all-reduce taken out (tests/unsynced_rank.py) does not."""

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from components.core import models
from components.training.launch import rank_arguments, torchrun_command
from components.training.phase import train_phase
from components.training.settings import LaunchSettings, TrainingSettings
from tests.instance_factory import make_data, make_vocab

# Three train shards of uneven sizes: with per-rank shards, one rank would read two and the other one.
SHARDS = {"train": [20, 12, 16], "dev": [8], "test": [8]}
STEPS = dict(max_steps=6, gradient_accumulation_steps=2, learning_rate=1e-3, warmup_steps=1, logging_steps=2, save_steps=3, eval_steps=3,
             max_seq_length=64)


def weights(folder):
    return load_file(str(folder / "model" / "model.safetensors"))


def largest_difference(a: dict, b: dict) -> float:
    return max((a[name] - b[name]).abs().max().item() for name in a)


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_two_ranks_end_with_the_weights_of_one_process_at_the_same_global_batch(tmp_path):
    vocab = make_vocab(str(tmp_path / "vocab"), vocab_size=1000)
    data = make_data(str(tmp_path / "data"), vocab, max_seq_length=64, shards=SHARDS)
    # Dropout off: the one difference left between the runs is where the batch is computed.
    torch.manual_seed(0)
    start = models.build_model("tiny", 1000)
    start.config.hidden_dropout_prob = start.config.attention_probs_dropout_prob = 0.0
    start.save_pretrained(str(tmp_path / "start"))
    ddp = TrainingSettings(per_device_train_batch_size=4, init_model=str(tmp_path / "start"), **STEPS)
    one = TrainingSettings(per_device_train_batch_size=8, init_model=str(tmp_path / "start"), **STEPS)

    summary = train_phase(data, vocab, str(tmp_path / "ddp"), settings=ddp, launch=LaunchSettings(processes=2))
    train_phase(data, vocab, str(tmp_path / "one"), settings=one)
    command = torchrun_command(rank_arguments(data, vocab, str(tmp_path / "unsynced"), ddp, None), 2)
    command[command.index("pipelines.cli")] = "tests.unsynced_rank"
    subprocess.run(command, check=True, timeout=300)

    # The summary is the one rank 0 published (read from the output folder), not the ranks' stdout.
    assert (summary["world_size"], summary["settings"]["global_batch_size"], summary["steps"]) == (2, 16, 6)
    state = json.loads((tmp_path / "ddp" / "checkpoints" / "step-000006" / "trainer_state.json").read_text())
    assert state["positions"] == [96, 96]  # 6 steps x 2 micro-batches x 4 instances x 2 ranks: the global position
    assert len(torch.load(tmp_path / "ddp" / "checkpoints" / "step-000006" / "rng.pt", weights_only=True)) == 2
    synced, single, unsynced = weights(tmp_path / "ddp"), weights(tmp_path / "one"), weights(tmp_path / "unsynced")
    moved = largest_difference(single, {name: w.to(single[name].dtype) for name, w in start.state_dict().items() if name in single})
    assert moved > 1e-3  # training changed the weights, so agreeing means something
    for name in single:
        torch.testing.assert_close(synced[name], single[name], rtol=1e-5, atol=2e-6, msg=lambda m: f"{name}: {m}")
    # Measured: synchronised within 1.2e-7 (float rounding); unsynchronised 7.5e-3 away; 5e-5 away when each
    # rank weighed its MLM loss by its own masked tokens instead of the global batch's.
    assert largest_difference(unsynced, single) > 1e-3
