"""Throughput figures (useful FLOPs, peak, MFU, padding share) and the mixed-precision choice per device."""

import statistics

import pytest
import torch
from transformers import BertConfig

from components.core.errors import BertpipeError
from components.training.phase import train_phase
from components.training.precision import Precision, resolve
from components.training.settings import TrainingSettings
from components.training.throughput import batch_counts, batch_training_flops, peak_flops
from tests.instance_factory import make_data, make_vocab

CPU = torch.device("cpu")


def test_flops_count_real_tokens_attention_per_instance_and_the_head_at_masked_positions():
    config = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=2, intermediate_size=32, num_attention_heads=2)
    encoder_parameters = 2 * (4 * 64 + 2 * 8 * 32)  # 1,536
    expected = 6 * encoder_parameters * 30 + 12 * 2 * 8 * (10**2 + 20**2) + 6 * 3 * (64 + 800) + 6 * 2 * 64
    assert batch_training_flops(config, torch.tensor([10, 20]), masked=3) == expected


def test_peak_comes_from_the_setting_else_none_on_cpu():
    assert peak_flops(CPU) is None
    assert peak_flops(CPU, peak_tflops=2.5) == 2.5e12


def test_batch_counts_separate_real_tokens_from_padding():
    batch = {"input_ids": torch.zeros(3, 16, dtype=torch.long), "instance_lengths": torch.tensor([16, 10, 9, 5])}
    assert batch_counts(batch) == {"tokens": 40.0, "slots": 48.0, "sequences": 4.0}


def test_precision_per_device():
    assert resolve("auto", CPU) == "no"  # bf16 autocast is slower than fp32 on CPUs without AMX
    assert resolve("bf16", CPU) == "bf16" and resolve("no", CPU) == "no"
    with pytest.raises(BertpipeError, match="mixed_precision=fp16 needs a CUDA GPU; use mixed_precision=no"):
        resolve("fp16", CPU)
    bf16 = Precision("bf16", CPU)
    with bf16.autocast():
        assert torch.nn.functional.linear(torch.ones(2, 4), torch.ones(3, 4)).dtype == torch.bfloat16
    assert bf16.scaler is None


def test_a_phase_logs_padding_share_and_mfu_against_the_given_peak(tmp_path):
    vocab = make_vocab(str(tmp_path / "vocab"), vocab_size=1000)
    data = make_data(str(tmp_path / "data"), vocab, max_seq_length=64, shards={"train": [32], "dev": [4], "test": [4]}, instance_length=24)
    settings = TrainingSettings(max_seq_length=64, per_device_train_batch_size=8, max_steps=2, logging_steps=1, warmup_steps=1, peak_tflops=1.0)
    summary = train_phase(data, vocab, str(tmp_path / "out"), settings=settings)
    rows = summary["history"]
    assert len(rows) == 2 and all(0 < row["mfu"] < 1 and 0 <= row["padding_share"] < 0.3 for row in rows)
    assert summary["settings"]["precision"] == "no"
    assert summary["padding_share"] == pytest.approx(statistics.median(row["padding_share"] for row in rows))
