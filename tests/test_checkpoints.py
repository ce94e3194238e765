"""Checkpoints and resume: a run killed with SIGKILL and resumed ends with the same weights as one never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from components.training import checkpoints
from components.core.errors import BertpipeError
from components.training.phase import train_phase
from components.training.settings import TrainingSettings
from tests.instance_factory import make_data, make_vocab

RUN = {"max_seq_length": 64, "max_steps": 16, "save_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 2, "logging_steps": 4, "seed": 3}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    vocab = make_vocab(str(root / "vocab"), vocab_size=1000)
    data = make_data(str(root / "data"), vocab, max_seq_length=64, shards={"train": [40, 40, 40], "dev": [8], "test": [8]})
    return vocab, data


def start_training(data: str, vocab: str, output: str) -> subprocess.Popen:
    """train_phase in a separate process (so it can really be killed)."""
    code = f"from components.training.phase import train_phase; from components.training.settings import TrainingSettings; train_phase({data!r}, {vocab!r}, {output!r}, settings=TrainingSettings(**{RUN!r}))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_and_resumed_run_equals_uninterrupted_run(inputs, tmp_path):
    vocab, data = inputs
    killed = start_training(data, vocab, str(tmp_path / "killed"))
    marker = tmp_path / "killed" / "checkpoints" / "step-000004" / checkpoints.MARKER
    deadline = time.monotonic() + 900  # generous: a loaded machine takes minutes to import torch
    while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    if not marker.exists():
        killed.wait()
        pytest.fail("no checkpoint before the kill: " + killed.stderr.read().decode()[-2000:])
    assert killed.wait() == -signal.SIGKILL, killed.stderr.read().decode()[-2000:]
    assert not (tmp_path / "killed" / "model").exists()

    uninterrupted = start_training(data, vocab, str(tmp_path / "whole"))
    resumed = train_phase(data, vocab, str(tmp_path / "killed"), settings=TrainingSettings(**RUN))
    assert uninterrupted.wait() == 0, uninterrupted.stderr.read().decode()[-2000:]

    assert resumed["resumed_from"].startswith(str(tmp_path / "killed" / "checkpoints" / "step-0000"))
    assert resumed["steps"] == 16
    a, b = load_file(str(tmp_path / "killed" / "model" / "model.safetensors")), load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    whole = json.loads((tmp_path / "whole" / "training_summary.json").read_text())
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in whole["history"]]


def test_incomplete_checkpoints_are_ignored(tmp_path):
    for step, complete in ((5, True), (10, True), (15, False)):
        folder = tmp_path / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x")
        if complete:
            (folder / checkpoints.MARKER).write_text("{}")
    assert checkpoints.latest(str(tmp_path)) == str(tmp_path / "checkpoints" / "step-000010")
    assert checkpoints.latest(str(tmp_path / "nothing")) is None


def test_finished_run_is_not_trained_again_and_other_settings_are_refused(inputs, tmp_path):
    vocab, data = inputs
    short = {**RUN, "max_steps": 4, "save_steps": 0}
    first = train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(**short))
    again = train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(**short))
    assert again["reused"] is True and again["history"] == first["history"]  # verified and reused, not trained or resumed
    with pytest.raises(BertpipeError, match=r"other settings \(per_device_train_batch_size 4 -> 8\)"):
        train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(**{**short, "per_device_train_batch_size": 8}))
    with pytest.raises(BertpipeError, match="another model shape .*num_hidden_layers 2 vs 4"):
        train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(model_size="mini", **short))
    with pytest.raises(BertpipeError) as error:  # resuming would publish a 4-step model for max_steps=2
        train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(**{**short, "max_steps": 2}))
    assert str(error.value) == (f"{tmp_path / 'out' / 'checkpoints' / 'step-000004'} is at step 4, past max_steps=2: raise --max-steps to at least 4, "
                                "or use a new output_uri to train from scratch")
    assert json.loads((tmp_path / "out" / "training_summary.json").read_text())["steps"] == 4


def test_corrupt_checkpoint_is_reported(inputs, tmp_path):
    vocab, data = inputs
    short = {**RUN, "max_steps": 2, "save_steps": 0}
    train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(**short))
    (tmp_path / "out" / "training_summary.json").unlink()  # killed after its last checkpoint: a rerun resumes from it
    optimizer_file = tmp_path / "out" / "checkpoints" / "step-000002" / "optimizer.pt"
    optimizer_file.write_bytes(optimizer_file.read_bytes()[:-10])
    with pytest.raises(BertpipeError, match="does not match its checksum"):
        train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(**short))


def test_only_the_newest_checkpoints_are_kept(inputs, tmp_path):
    vocab, data = inputs
    train_phase(data, vocab, str(tmp_path / "out"), settings=TrainingSettings(**{**RUN, "max_steps": 6, "save_steps": 2, "save_total_limit": 2}))
    assert sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir()) == ["step-000004", "step-000006"]
    assert checkpoints.latest(str(tmp_path / "out")).endswith("step-000006")


def test_fp16_loss_scale_survives_a_resume(tmp_path):
    """A resumed fp16 run continues from the backed-off loss scale, not GradScaler's fresh 65536 (which would skip
    steps on overflow again until it has backed off)."""
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=1000)
    for _ in range(3):  # three overflows halve the scale three times
        scaler.scale(model(torch.ones(1, 4)).sum()).backward()
        model.weight.grad.fill_(float("inf"))
        scaler.step(optimizer)
        scaler.update()
    assert scaler.get_scale() == 2.0**13
    uri = checkpoints.save(str(tmp_path), 3, model=model, optimizer=optimizer, scheduler=scheduler, rng_states=[], trainer_state={}, scaler=scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=1000)
    checkpoints.restore(uri, model=model, optimizer=optimizer, scheduler=scheduler, scaler=fresh)
    assert fresh.get_scale() == 2.0**13 and fresh.state_dict()["_growth_tracker"] == scaler.state_dict()["_growth_tracker"]
