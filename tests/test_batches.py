"""The collator's exact output and the training stream's order: deterministic, complete per epoch, resumable."""

import numpy as np
import pytest

from components.core import instances
from components.core.batches import InstanceArrays, collate, evaluation_batches
from components.training.stream import TrainingStream

ROWS = {
    "input_ids": [[2, 10, 4, 3, 11, 12, 3], [2, 13, 3, 4, 3], [2, 20, 21, 22, 3, 23, 24, 25, 26, 4, 3]],
    "segment_a_length": [4, 3, 5],
    "masked_lm_positions": [[2], [3], [1, 9]],
    "masked_lm_ids": [[30], [31], [32, 33]],
    "next_sentence_label": [0, 1, 0],
}


def arrays(rows=ROWS) -> InstanceArrays:
    import pyarrow as pa

    return InstanceArrays.from_table(pa.Table.from_pydict(rows, schema=instances.SCHEMA))


def test_collate_pads_to_multiple_of_eight_and_lists_masks_flat():
    batch = collate(arrays(), [0, 1])
    assert batch["input_ids"].tolist() == [[2, 10, 4, 3, 11, 12, 3, 0], [2, 13, 3, 4, 3, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0, 0, 0]]
    assert batch["mlm_batch_index"].tolist() == [0, 1]
    assert batch["mlm_positions"].tolist() == [2, 3]
    assert batch["mlm_labels"].tolist() == [30, 31]
    assert batch["next_sentence_label"].tolist() == [0, 1]


def test_collate_width_follows_longest_row_in_any_order():
    batch = collate(arrays(), [2, 0])
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0, :11].tolist() == ROWS["input_ids"][2]
    assert batch["token_type_ids"][0].tolist() == [0] * 5 + [1] * 6 + [0] * 5
    assert batch["mlm_batch_index"].tolist() == [0, 0, 1]
    assert batch["mlm_positions"].tolist() == [1, 9, 2]
    assert batch["mlm_labels"].tolist() == [32, 33, 30]
    assert batch["input_ids"].dtype == batch["mlm_positions"].dtype == batch["mlm_labels"].dtype


def write_numbered_shards(tmp_path, sizes: list[int]) -> tuple[str, dict]:
    """Shards whose row k of shard s has input_ids [2, 1000*s + k, 3]: each row names itself."""
    entries = []
    for s, size in enumerate(sizes):
        rows = {
            "input_ids": [[2, 1000 * s + k, 3] for k in range(size)],
            "segment_a_length": [3] * size,
            "masked_lm_positions": [[1]] * size,
            "masked_lm_ids": [[1000 * s + k] for k in range(size)],
            "next_sentence_label": [k % 2 for k in range(size)],
        }
        path = instances.shard_path("train", s)
        entries.append({"path": path, **instances.write_shard(str(tmp_path / path), rows)})
    manifest = {"splits": {"train": {"num_instances": sum(sizes), "shards": entries}}}
    return str(tmp_path), manifest


def ids_of(stream, batches: int) -> list[int]:
    return [i for _ in range(batches) for i in next(stream)["input_ids"][:, 1].tolist()]


def test_stream_visits_every_instance_once_per_epoch_and_reshuffles(tmp_path):
    data_uri, manifest = write_numbered_shards(tmp_path, [7, 5, 8])
    stream = TrainingStream(data_uri, manifest, batch_size=4, seed=1)
    seen = ids_of(stream, 10)  # 40 = two epochs of 20
    everything = sorted([k for k in range(7)] + [1000 + k for k in range(5)] + [2000 + k for k in range(8)])
    assert sorted(seen[:20]) == everything and sorted(seen[20:]) == everything
    assert seen[:20] != seen[20:]
    assert seen[:20] != everything
    assert stream.position == 40 and stream.epoch == 2.0


def test_stream_is_deterministic_and_resumes_at_a_position(tmp_path):
    data_uri, manifest = write_numbered_shards(tmp_path, [7, 5, 8])
    full = ids_of(TrainingStream(data_uri, manifest, batch_size=3, seed=5), 12)
    assert full == ids_of(TrainingStream(data_uri, manifest, batch_size=3, seed=5), 12)
    assert full != ids_of(TrainingStream(data_uri, manifest, batch_size=3, seed=6), 12)
    resumed = TrainingStream(data_uri, manifest, batch_size=3, seed=5, position=15)
    assert ids_of(resumed, 7) == full[15:]


def test_batch_spanning_two_shards_keeps_masks_aligned(tmp_path):
    data_uri, manifest = write_numbered_shards(tmp_path, [3, 3])
    batch = next(TrainingStream(data_uri, manifest, batch_size=5, seed=0))
    assert batch["input_ids"].shape == (5, 8)
    assert batch["mlm_batch_index"].tolist() == [0, 1, 2, 3, 4]
    assert batch["mlm_labels"].tolist() == batch["input_ids"][:, 1].tolist()


@pytest.mark.parametrize("sizes, world_size", [([12], 2), ([7, 5, 8], 2), ([6, 4], 5)])
def test_ranks_split_each_global_batch_whatever_the_shard_count(tmp_path, sizes, world_size):
    """1 shard for 2 ranks, 3 uneven shards for 2, more ranks than shards: every rank has data, together they
    read what one process of world_size x the batch reads, and an epoch visits every instance once."""
    data_uri, manifest = write_numbered_shards(tmp_path, sizes)
    epoch_size, batch = sum(sizes), 2
    steps = 2 * epoch_size // (batch * world_size) + 1
    ranks = [TrainingStream(data_uri, manifest, batch_size=batch, seed=3, rank=r, world_size=world_size) for r in range(world_size)]
    together = [i for _ in range(steps) for stream in ranks for i in next(stream)["input_ids"][:, 1].tolist()]
    assert together == ids_of(TrainingStream(data_uri, manifest, batch_size=batch * world_size, seed=3), steps)
    everything = sorted(1000 * shard + k for shard, size in enumerate(sizes) for k in range(size))
    assert sorted(together[:epoch_size]) == everything and sorted(together[epoch_size : 2 * epoch_size]) == everything
    assert {stream.position for stream in ranks} == {steps * batch * world_size}


def test_evaluation_batches_keep_stored_order_and_short_last_batch(tmp_path):
    data_uri, manifest = write_numbered_shards(tmp_path, [5, 2])
    batches = list(evaluation_batches(data_uri, manifest, "train", 3))
    assert [b["input_ids"][:, 1].tolist() for b in batches] == [[0, 1, 2], [3, 4], [1000, 1001]]
    assert len(list(evaluation_batches(data_uri, manifest, "train", 3, max_batches=2))) == 2
    assert np.all([b["input_ids"].shape[1] == 8 for b in batches])
