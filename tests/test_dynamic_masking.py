"""Dynamic masking end to end: unmasked train pairs, fixed dev/test masks, fresh masks per epoch in the training stream."""

import gzip

import numpy as np
import pytest
import torch

from components.core import instances
from components.training.stream import TrainingStream
from components.core.corpus import demo_corpus_path
from components.training.dynamic_masking import DynamicMasking
from components.core.masking import MaskingConfig
from components.data.local import create_pretraining_data
from components.data.settings import DataSettings
from components.training.phase import train_phase
from components.training.settings import TrainingSettings
from components.vocab.export import VocabSettings, export_vocab
from components.core.vocab_files import load_vocab_tokens


@pytest.fixture(scope="module")
def dynamic_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dynamic")
    vocab = str(root / "vocab")
    export_vocab(vocab, corpus="demo", settings=VocabSettings(vocab_size=1500))
    text = gzip.open(demo_corpus_path(), "rt", encoding="utf-8").read()
    corpus = root / "slice.txt"
    corpus.write_text("\n\n".join(text.split("\n\n")[:80]) + "\n", encoding="utf-8")
    data = str(root / "data")
    manifest = create_pretraining_data(str(corpus), vocab, data, settings=DataSettings(
        max_seq_length=64, max_predictions_per_seq=10, dynamic_masking=True, dev_fraction=0.1, test_fraction=0.1, seed=5))
    return vocab, data, manifest


def test_only_the_train_split_is_stored_unmasked(dynamic_data):
    _, data, _ = dynamic_data
    assert all(not row for row in instances.load_split(data, "train").column("masked_lm_positions").to_pylist())
    for split in ("dev", "test"):
        positions = instances.load_split(data, split).column("masked_lm_positions").to_pylist()
        assert positions and all(1 <= len(row) <= 10 for row in positions)


def stream(data, manifest, vocab, position=0):
    masking = DynamicMasking(MaskingConfig.for_vocab(load_vocab_tokens(vocab), manifest["settings"]), seed=9)
    return TrainingStream(data, manifest, batch_size=16, seed=9, position=position, masking=masking)


def test_masks_are_fresh_each_epoch_and_replayed_on_resume(dynamic_data):
    vocab, data, manifest = dynamic_data
    first = next(stream(data, manifest, vocab))
    again = next(stream(data, manifest, vocab))
    assert all(np.array_equal(first[key], again[key]) for key in first)
    mask_id = load_vocab_tokens(vocab).index("[MASK]")
    count = len(first["mlm_labels"])
    assert 16 <= count <= 160 and (first["input_ids"] == mask_id).sum() >= count * 0.6
    # Masked positions differ between epochs for the same unmasked row.
    masking = DynamicMasking(MaskingConfig.for_vocab(load_vocab_tokens(vocab), manifest["settings"]), seed=9)
    arrays = stream(data, manifest, vocab)._arrays(0)
    rows = np.arange(8)
    epoch0, epoch1 = masking.apply(arrays, rows, 0, 0), masking.apply(arrays, rows, 1, 0)
    assert not np.array_equal(epoch0.masked_positions, epoch1.masked_positions)
    assert np.array_equal(masking.apply(arrays, rows, 1, 0).masked_positions, epoch1.masked_positions)
    # Unmasking restores the stored row: labels are the original ids at the masked positions.
    for i, row in enumerate(rows):
        original = arrays.input_ids[arrays.input_offsets[row]:arrays.input_offsets[row + 1]]
        positions = epoch1.masked_positions[epoch1.masked_offsets[i]:epoch1.masked_offsets[i + 1]]
        labels = epoch1.masked_ids[epoch1.masked_offsets[i]:epoch1.masked_offsets[i + 1]]
        assert np.array_equal(original[positions], labels)


def test_ranks_draw_their_own_masks(dynamic_data):
    """Two ranks over a train split that holds the same shard twice: if masks and orders were drawn per rank's
    own shard list, the ranks would see identical batches; they see disjoint slices of one global stream instead."""
    vocab, data, manifest = dynamic_data
    train = manifest["splits"]["train"]
    twice = {**manifest, "splits": {"train": {**train, "shards": [train["shards"][0]] * 2}}}
    masking = DynamicMasking(MaskingConfig.for_vocab(load_vocab_tokens(vocab), manifest["settings"]), seed=9)
    ranks = [TrainingStream(data, twice, batch_size=8, seed=9, rank=r, world_size=2, masking=masking) for r in range(2)]
    alone = TrainingStream(data, twice, batch_size=16, seed=9, masking=masking)
    for _ in range(2 * train["shards"][0]["num_instances"] // 16):
        first, second, both = next(ranks[0]), next(ranks[1]), next(alone)
        assert not torch.equal(first["input_ids"], second["input_ids"])
        assert torch.equal(torch.cat([first["mlm_labels"], second["mlm_labels"]]), both["mlm_labels"])
        assert torch.equal(torch.cat([first["mlm_positions"], second["mlm_positions"]]), both["mlm_positions"])


def test_training_on_dynamic_data_learns(dynamic_data, tmp_path):
    vocab, data, _ = dynamic_data
    summary = train_phase(data, vocab, str(tmp_path / "phase"), settings=TrainingSettings(max_seq_length=64, max_steps=30, per_device_train_batch_size=16, learning_rate=2e-3, warmup_steps=3, logging_steps=10, seed=1))
    losses = [row["mlm_loss"] for row in summary["history"] if "mlm_loss" in row]
    assert len(losses) == 3 and losses[-1] < losses[0]
