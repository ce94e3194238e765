"""Sequence packing: the packed batch's exact layout, and a packed forward and backward that equal
the unpacked ones instance by instance (tiny model, float64, no dropout)."""

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file

from components.core import instances, models
from components.core.batches import InstanceArrays, collate, collate_packed
from components.core.packing import attention_groups, end_to_end
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


def test_end_to_end_places_the_items_in_order_in_one_row_rounded_up_to_the_multiple():
    offsets, width = end_to_end([5, 9, 3], 8)
    assert offsets.tolist() == [0, 5, 14] and width == 24
    assert end_to_end([8, 8], 8)[1] == 16 and end_to_end([], 8)[1] == 8


def test_packed_batch_layout_restarts_positions_and_locates_each_instance():
    arrays = InstanceArrays.from_table(pa.Table.from_pydict(ROWS, schema=instances.SCHEMA))
    batch = collate_packed(arrays, [2, 0, 1])
    # Instances 2 (11 tokens), 0 (7), 1 (5) in that order: 23 tokens, one row of 24.
    assert batch["input_ids"].tolist() == [ROWS["input_ids"][2] + ROWS["input_ids"][0] + ROWS["input_ids"][1] + [0]]
    assert batch["position_ids"].tolist() == [list(range(11)) + list(range(7)) + list(range(5)) + [0]]
    assert batch["attention_mask"].tolist() == [[1] * 23 + [0]]
    assert batch["token_type_ids"].tolist() == [[0] * 5 + [1] * 6 + [0] * 4 + [1] * 3 + [0] * 3 + [1] * 2 + [0]]
    assert batch["cls_positions"].tolist() == [0, 11, 18]
    assert batch["mlm_batch_index"].tolist() == [0, 0, 0, 0] and batch["mlm_positions"].tolist() == [1, 9, 13, 21]
    assert batch["mlm_labels"].tolist() == [32, 33, 30, 31] and batch["next_sentence_label"].tolist() == [0, 0, 1]
    assert batch["instance_lengths"].tolist() == [11, 7, 5]
    # Attention: all three in the group of width 16 (its first), one row each; the padding slot points past them.
    assert batch["attention_group_counts"].tolist() == [3] + [0] * 10
    assert batch["attention_slots"][16:32].tolist() == list(range(11, 18)) + [-1] * 9
    assert batch["attention_inverse"][0, 23].item() == 48


def test_attention_groups_put_each_instance_alone_in_a_row_of_the_narrowest_width_that_holds_it():
    # Instances of 20 (slots 0-19), 17 (20-36) and 30 (40-69) in a batch of 80 slots; padding at 37-39 and 70-79.
    slots, counts, inverse = attention_groups([0, 20, 40], [20, 17, 30], 80)
    assert counts.tolist() == [0, 2, 1] + [0] * 8  # two rows of 24, one of 32
    assert slots.tolist() == list(range(20)) + [-1] * 4 + list(range(20, 37)) + [-1] * 7 + list(range(40, 70)) + [-1] * 2
    assert inverse[:37].tolist() == list(range(20)) + list(range(24, 41)) and inverse[40:70].tolist() == list(range(48, 78))
    assert set(inverse[37:40].tolist()) | set(inverse[70:].tolist()) == {80}  # padding: the zero row after the 80 group slots


def test_compiled_packed_forward_makes_no_new_graph_after_the_second_batch():
    """Every packed batch has its own groups; traced, their number and widths would make a graph per batch."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from components.training.lazy_dynamo import compile_model

    torch._dynamo.reset()
    counters.clear()
    forward = tiny_forward()
    compiled = compile_model(forward, backend="eager")
    graphs, layouts = [], set()
    for seed in range(6):
        batch = collate_packed(random_arrays(12, 60, seed=seed), np.arange(12))
        layouts.add(tuple(batch["attention_group_counts"].tolist()))
        mlm_logits, _ = compiled(**models.inputs_of(batch))
        torch.testing.assert_close(mlm_logits, forward(**models.inputs_of(batch))[0], rtol=0, atol=0)
        graphs.append(counters["stats"]["unique_graphs"])
    assert len(layouts) == 6 and graphs[1] > graphs[0] > 0 and graphs[-1] == graphs[1]
    torch._dynamo.reset()


def test_packed_logits_loss_and_gradients_equal_the_unpacked_ones():
    arrays = random_arrays(24, 60, seed=1)
    forward = tiny_forward()
    results = []
    packed_batch = collate_packed(arrays, np.arange(24))
    for batch in (collate(arrays, np.arange(24)), packed_batch):
        forward.zero_grad()
        mlm_logits, nsp_logits = forward(**models.inputs_of(batch))
        mlm_loss, nsp_loss = models.pretraining_losses(mlm_logits, nsp_logits, batch)
        (mlm_loss + nsp_loss).backward()
        results.append((batch["input_ids"].shape, mlm_logits.detach(), nsp_logits.detach(), mlm_loss.item(), nsp_loss.item(),
                        {name: p.grad.clone() for name, p in forward.named_parameters()}))
    (unpacked_shape, *unpacked), (packed_shape, *packed) = results
    assert packed_shape[0] == 1 and packed_shape[1] < unpacked_shape.numel() * 0.7  # one row, no padding to the longest
    torch.testing.assert_close(packed[0], unpacked[0], rtol=1e-10, atol=1e-10)  # MLM logits, masked token by token
    torch.testing.assert_close(packed[1], unpacked[1], rtol=1e-10, atol=1e-10)  # NSP logits, instance by instance
    assert packed[2] == pytest.approx(unpacked[2], rel=1e-6) and packed[3] == pytest.approx(unpacked[3], rel=1e-6)
    for name, gradient in unpacked[4].items():
        torch.testing.assert_close(packed[4][name], gradient, rtol=1e-6, atol=1e-9, msg=name)


@torch.no_grad()
def test_no_attention_across_instances_of_a_row():
    arrays = random_arrays(6, 40, seed=2)
    forward = tiny_forward()
    batch = collate_packed(arrays, np.arange(6))
    victim = 3
    changed = dict(batch, input_ids=batch["input_ids"].clone())
    first, slots = int(batch["cls_positions"][victim]), torch.arange(batch["input_ids"].shape[1])
    tokens = ((slots >= first) & (slots < first + int(batch["instance_lengths"][victim])))[None]
    changed["input_ids"][tokens] = torch.where(changed["input_ids"][tokens] == 3, 3, 7)  # every token but [CLS]/[SEP] becomes 7
    mlm_before, nsp_before = forward(**models.inputs_of(batch))
    mlm_after, nsp_after = forward(**models.inputs_of(changed))
    mine = torch.from_numpy(np.repeat(np.arange(6), np.diff(arrays.masked_offsets))) == victim
    torch.testing.assert_close(mlm_after[~mine], mlm_before[~mine], rtol=0, atol=1e-12)
    others = torch.arange(6) != victim
    torch.testing.assert_close(nsp_after[others], nsp_before[others], rtol=0, atol=1e-12)
    assert (mlm_after[mine] - mlm_before[mine]).abs().max() > 1e-3 and (nsp_after[victim] - nsp_before[victim]).abs().max() > 1e-6


@pytest.mark.parametrize("max_seq_length,batch_size", [(128, 64), (512, 32)])
def test_padding_is_under_one_percent_on_short_documents(max_seq_length, batch_size):
    arrays = random_arrays(batch_size * 20, max_seq_length // 2, seed=max_seq_length, min_length=10)
    real = slots = padded = 0
    for start in range(0, len(arrays), batch_size):
        rows = np.arange(start, start + batch_size)
        batch = collate_packed(arrays, rows)
        assert 0 <= batch["input_ids"].numel() - int(batch["instance_lengths"].sum()) < 8  # only the rounding up to 8
        real += int(batch["instance_lengths"].sum())
        slots += batch["input_ids"].numel()
        padded += collate(arrays, rows)["input_ids"].numel()
    assert 1 - real / slots < 0.01 < 0.3 < 1 - real / padded


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
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert all(torch.allclose(a[key], u[key], atol=1e-5) for key in a)
    assert [row["loss"] for row in packed[0]["history"]] == pytest.approx([row["loss"] for row in unpacked["history"]], rel=1e-5)
    # The same instances per step, far less padding.
    assert max(row["padding_share"] for row in packed[0]["history"]) < 0.1 < min(row["padding_share"] for row in unpacked["history"])
