"""Sequence packing: the packer's placement, the packed batch's exact layout, and a packed forward
and backward that equal the unpacked ones instance by instance (tiny model, float64, no dropout)."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from components.core import instances, models
from components.core.batches import InstanceArrays, collate, collate_packed
from components.core.packing import attention_groups, first_fit_decreasing, grouped_attention_pays_off, pack
from components.training.phase import train_phase
from components.training.settings import TrainingSettings
from tests.instance_factory import make_data, make_vocab
from tests.test_batches import ROWS

VOCAB = 300


def random_arrays(count: int, max_length: int, seed: int = 0, min_length: int = 8) -> InstanceArrays:
    """Instances of random lengths: [CLS] A [SEP] B [SEP], three masked tokens each, NSP labels alternating."""
    rng = np.random.default_rng(seed)
    rows = {name: [] for name in instances.SCHEMA.names}
    for i in range(count):
        length = int(rng.integers(min_length, max_length + 1))
        segment_a = int(rng.integers(2, length - 2))
        rows["input_ids"].append([2, *rng.integers(5, VOCAB, length - 2).tolist(), 3])
        rows["segment_a_length"].append(segment_a)
        rows["masked_lm_positions"].append(sorted(rng.choice(np.arange(1, length - 1), size=3, replace=False).tolist()))
        rows["masked_lm_ids"].append(rng.integers(5, VOCAB, 3).tolist())
        rows["next_sentence_label"].append(i % 2)
    return InstanceArrays.from_table(pa.Table.from_pydict(rows, schema=instances.SCHEMA))


def tiny_forward(seed: int = 0):
    torch.manual_seed(seed)
    return models.MaskedPretrainingModel(models.build_model("tiny", VOCAB).double().eval())


def test_first_fit_decreasing_places_the_longest_first_into_the_first_row_with_room():
    rows, offsets = first_fit_decreasing([5, 9, 3, 4, 7], 10)
    assert rows.tolist() == [2, 0, 1, 2, 1] and offsets.tolist() == [0, 0, 7, 5, 0]
    with pytest.raises(ValueError, match="an item of 11 does not fit in rows of 10"):
        first_fit_decreasing([3, 11], 10)


def test_pack_narrows_the_rows_while_their_number_stays():
    # FFD at 512 fills rows of 500 and 250; 400 tokens per row still take the four in two rows.
    rows, offsets, width = pack([300, 200, 150, 100], 512)
    assert width == 400 and rows.tolist() == [0, 1, 1, 0] and offsets.tolist() == [0, 0, 200, 300]
    assert pack([30, 20, 25], 512)[2] == 80  # one row, as wide as its content rounded up to 8


def test_packed_batch_layout_restarts_positions_and_locates_each_instance():
    arrays = InstanceArrays.from_table(pa.Table.from_pydict(ROWS, schema=instances.SCHEMA))
    batch = collate_packed(arrays, [0, 1, 2], 16)
    # Longest first: instance 2 (11 tokens) opens row 0, instance 0 (7) row 1, instance 1 (5) fills row 0.
    assert batch["input_ids"].tolist() == [ROWS["input_ids"][2] + ROWS["input_ids"][1], ROWS["input_ids"][0] + [0] * 9]
    assert batch["position_ids"].tolist() == [list(range(11)) + list(range(5)), list(range(7)) + [0] * 9]
    assert batch["instance_ids"].tolist() == [[3] * 11 + [2] * 5, [1] * 7 + [0] * 9]
    assert batch["attention_mask"].tolist() == [[1] * 16, [1] * 7 + [0] * 9]
    assert batch["token_type_ids"].tolist() == [[0] * 5 + [1] * 6 + [0] * 3 + [1] * 2, [0] * 4 + [1] * 3 + [0] * 9]
    assert batch["cls_rows"].tolist() == [1, 0, 0] and batch["cls_positions"].tolist() == [0, 11, 0]
    assert batch["mlm_batch_index"].tolist() == [1, 0, 0, 0] and batch["mlm_positions"].tolist() == [2, 14, 1, 9]
    assert batch["mlm_labels"].tolist() == [30, 31, 32, 33] and batch["next_sentence_label"].tolist() == [0, 1, 0]
    assert batch["instance_lengths"].tolist() == [7, 5, 11]


def test_attention_groups_put_each_instance_alone_in_a_row_of_the_narrowest_width_that_holds_it():
    # Two rows of 40: instances of 20 (row 0 at 0), 17 (row 0 at 20), 30 (row 1 at 0); padding at 37-39 and 70-79.
    groups, inverse = attention_groups([0, 20, 40], [20, 17, 30], 80)
    assert [g.shape for g in groups] == [(2, 24), (1, 32)]
    assert groups[0][0].tolist() == list(range(20)) + [-1] * 4 and groups[0][1].tolist() == list(range(20, 37)) + [-1] * 7
    assert groups[1][0].tolist() == list(range(40, 70)) + [-1] * 2
    assert inverse[:37].tolist() == list(range(20)) + list(range(24, 41)) and inverse[40:70].tolist() == list(range(48, 78))
    assert set(inverse[37:40].tolist()) | set(inverse[70:].tolist()) == {80}  # padding: the zero row after the 80 group slots
    # Grouped where it at least halves the score area: 2 x 40^2 = 3200 rows vs 2 x 24^2 + 32^2 = 2176 groups.
    assert not grouped_attention_pays_off([20, 17, 30], 2, 40) and grouped_attention_pays_off([20, 17, 30], 1, 80)


@pytest.mark.parametrize("grouped", [False, True])
def test_packed_logits_loss_and_gradients_equal_the_unpacked_ones(grouped):
    arrays = random_arrays(24, 60, seed=1)
    forward = tiny_forward()
    results = []
    packed_batch = collate_packed(arrays, np.arange(24), 128, grouped=grouped)
    assert ("attention_groups" in packed_batch) == grouped
    for batch in (collate(arrays, np.arange(24)), packed_batch):
        forward.zero_grad()
        mlm_logits, nsp_logits = forward(**models.inputs_of(batch))
        mlm_loss, nsp_loss = models.pretraining_losses(mlm_logits, nsp_logits, batch)
        (mlm_loss + nsp_loss).backward()
        results.append((batch["input_ids"].shape, mlm_logits.detach(), nsp_logits.detach(), mlm_loss.item(), nsp_loss.item(),
                        {name: p.grad.clone() for name, p in forward.named_parameters()}))
    (unpacked_shape, *unpacked), (packed_shape, *packed) = results
    assert packed_shape[0] < unpacked_shape[0] / 2  # 24 instances in fewer than 12 rows of 128
    torch.testing.assert_close(packed[0], unpacked[0], rtol=1e-10, atol=1e-10)  # MLM logits, masked token by token
    torch.testing.assert_close(packed[1], unpacked[1], rtol=1e-10, atol=1e-10)  # NSP logits, instance by instance
    assert packed[2] == pytest.approx(unpacked[2], rel=1e-6) and packed[3] == pytest.approx(unpacked[3], rel=1e-6)
    for name, gradient in unpacked[4].items():
        torch.testing.assert_close(packed[4][name], gradient, rtol=1e-6, atol=1e-9, msg=name)


@pytest.mark.parametrize("grouped", [False, True])
@torch.no_grad()
def test_no_attention_across_instances_of_a_row(grouped):
    arrays = random_arrays(6, 40, seed=2)
    forward = tiny_forward()
    batch = collate_packed(arrays, np.arange(6), 128, grouped=grouped)
    assert batch["input_ids"].shape[0] < 6
    victim = 3
    changed = dict(batch, input_ids=batch["input_ids"].clone())
    tokens = changed["instance_ids"] == victim + 1
    changed["input_ids"][tokens] = torch.where(changed["input_ids"][tokens] == 3, 3, 7)  # every token but [CLS]/[SEP] becomes 7
    mlm_before, nsp_before = forward(**models.inputs_of(batch))
    mlm_after, nsp_after = forward(**models.inputs_of(changed))
    mine = torch.from_numpy(np.repeat(np.arange(6), np.diff(arrays.masked_offsets))) == victim
    torch.testing.assert_close(mlm_after[~mine], mlm_before[~mine], rtol=0, atol=1e-12)
    others = torch.arange(6) != victim
    torch.testing.assert_close(nsp_after[others], nsp_before[others], rtol=0, atol=1e-12)
    assert (mlm_after[mine] - mlm_before[mine]).abs().max() > 1e-3 and (nsp_after[victim] - nsp_before[victim]).abs().max() > 1e-6


@pytest.mark.parametrize("max_seq_length,batch_size", [(128, 64), (512, 32)])
def test_padding_is_under_five_percent_on_short_documents(max_seq_length, batch_size):
    arrays = random_arrays(batch_size * 20, max_seq_length // 2, seed=max_seq_length, min_length=10)
    real = slots = padded = 0
    for start in range(0, len(arrays), batch_size):
        rows = np.arange(start, start + batch_size)
        batch = collate_packed(arrays, rows, max_seq_length)
        real += int(batch["instance_lengths"].sum())
        slots += batch["input_ids"].numel()
        padded += collate(arrays, rows)["input_ids"].numel()
    assert 1 - real / slots < 0.05 < 0.3 < 1 - real / padded


@pytest.fixture(scope="module")
def short_documents(tmp_path_factory):
    root = tmp_path_factory.mktemp("packing")
    vocab = make_vocab(str(root / "vocab"), vocab_size=1000)
    return vocab, make_data(str(root / "data"), vocab, max_seq_length=64, shards={"train": [48, 48], "dev": [8], "test": [8]}, instance_length=20)


def weights(summary) -> dict:
    return load_file(f"{summary['model_uri']}/model.safetensors")


def test_a_packed_phase_is_deterministic_and_trains_the_unpacked_model(short_documents, tmp_path):
    vocab, data = short_documents
    from tests.test_training import save_tiny_model

    init = save_tiny_model(tmp_path / "init", dropout=0.0)
    common = {"max_seq_length": 64, "per_device_train_batch_size": 12, "learning_rate": 1e-3, "warmup_steps": 1, "logging_steps": 1, "max_steps": 4, "init_model": init}
    packed = [train_phase(data, vocab, str(tmp_path / name), settings=TrainingSettings(**common)) for name in ("a", "b")]
    unpacked = train_phase(data, vocab, str(tmp_path / "u"), settings=TrainingSettings(**common, pack_sequences=False))
    a, b, u = weights(packed[0]), weights(packed[1]), weights(unpacked)
    # 12 instances of ~20 tokens in 64-token rows: attention runs per instance (a third of the rows' score area).
    assert "attention_groups" in collate_packed(random_arrays(12, 24, min_length=18), np.arange(12), 64)
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert all(torch.allclose(a[key], u[key], atol=1e-5) for key in a)
    assert [row["loss"] for row in packed[0]["history"]] == pytest.approx([row["loss"] for row in unpacked["history"]], rel=1e-5)
    # The same instances per step, far less padding.
    assert max(row["padding_share"] for row in packed[0]["history"]) < 0.1 < min(row["padding_share"] for row in unpacked["history"])
