"""DDP under torchrun on CPU (gloo, 2 processes): disjoint shards, one published model, the global batch logged."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.instance_factory import make_data, make_vocab

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(tmp_path: Path, data: str, vocab: str, output: str, **settings) -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(
        "import json, sys\nfrom components.training.phase import train_phase\n"
        f"summary = train_phase({data!r}, {vocab!r}, {output!r}, **{settings!r})\n"
        "print('SUMMARY', json.dumps({k: summary[k] for k in ('world_size', 'global_batch_size', 'steps')}))\n"
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_two_cpu_processes_train_one_model(tmp_path):
    vocab = make_vocab(str(tmp_path / "vocab"), vocab_size=1000)
    data = make_data(str(tmp_path / "data"), vocab, max_seq_length=64, shards={"train": [24, 24, 24, 24], "dev": [8], "test": [8]})
    settings = {"max_steps": 6, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "learning_rate": 1e-3, "warmup_steps": 1,
                "logging_steps": 2, "save_steps": 3, "eval_steps": 3, "max_seq_length": 64}
    done = torchrun(tmp_path, data, vocab, str(tmp_path / "out"), **settings)
    assert done.returncode == 0, done.stderr[-4000:]
    summaries = [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines() if line.startswith("SUMMARY")]
    assert summaries == [{"world_size": 2, "global_batch_size": 16, "steps": 6}] * 2
    written = json.loads((tmp_path / "out" / "training_summary.json").read_text())
    assert written["settings"]["global_batch_size"] == 16 and written["world_size"] == 2
    state = json.loads((tmp_path / "out" / "checkpoints" / "step-000006" / "trainer_state.json").read_text())
    assert state["positions"] == [48, 48]  # 6 steps x 2 micro-batches x 4 instances, on each rank
    assert len(torch.load(tmp_path / "out" / "checkpoints" / "step-000006" / "rng.pt", weights_only=True)) == 2
    weights = load_file(str(tmp_path / "out" / "model" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
