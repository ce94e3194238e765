"""From instance shards to model batches: flat arrays of a shard, a collator that pads to the
batch's longest row, one that packs a batch's instances into one row (components.core.packing), and
the evaluation batches (stored order, unpacked). The training stream, which shuffles and
masks, is the training step's (components/training/stream.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import torch

from components.core import instances as instance_format
from components.core import packing
from components.core import storage

PAD_MULTIPLE = 8


@dataclass(frozen=True)
class InstanceArrays:
    """One table of instances as flat numpy arrays (list columns = values + offsets)."""

    input_ids: np.ndarray
    input_offsets: np.ndarray
    segment_a_length: np.ndarray
    masked_positions: np.ndarray
    masked_ids: np.ndarray
    masked_offsets: np.ndarray
    next_sentence_label: np.ndarray

    @classmethod
    def from_table(cls, table: pa.Table) -> "InstanceArrays":
        def flat(name):
            column = table.column(name).combine_chunks()
            return _numpy(column.values), _numpy(column.offsets)

        ids, ids_offsets = flat("input_ids")
        positions, masked_offsets = flat("masked_lm_positions")
        labels, _ = flat("masked_lm_ids")
        return cls(
            ids, ids_offsets, _numpy(table.column("segment_a_length").combine_chunks()), positions, labels, masked_offsets,
            _numpy(table.column("next_sentence_label").combine_chunks()),
        )

    def __len__(self) -> int:
        return len(self.segment_a_length)

    def select(self, rows) -> "InstanceArrays":
        """The given rows, in that order, as new arrays (row k of the result is rows[k])."""
        rows = np.asarray(rows, dtype=np.int64)
        ids, ids_offsets = _ragged_rows(self.input_ids, self.input_offsets, rows)
        positions, masked_offsets = _ragged_rows(self.masked_positions, self.masked_offsets, rows)
        labels, _ = _ragged_rows(self.masked_ids, self.masked_offsets, rows)
        return InstanceArrays(ids, ids_offsets, self.segment_a_length[rows], positions, labels, masked_offsets, self.next_sentence_label[rows])

    @staticmethod
    def concat(parts: list["InstanceArrays"]) -> "InstanceArrays":
        """The parts' rows one after the other."""
        if len(parts) == 1:
            return parts[0]

        def offsets(name):
            lengths = np.concatenate([np.diff(getattr(part, name)) for part in parts])
            return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        values = {f.name: np.concatenate([getattr(part, f.name) for part in parts]) for f in fields(InstanceArrays) if not f.name.endswith("offsets")}
        return InstanceArrays(**values, input_offsets=offsets("input_offsets"), masked_offsets=offsets("masked_offsets"))


def _numpy(array: pa.Array) -> np.ndarray:
    """A null-free integer Arrow array as a numpy view of its buffer (Array.to_numpy imports pandas: a second at start-up)."""
    if array.null_count:
        raise ValueError(f"unexpected nulls in a {array.type} column")
    dtype = np.dtype(str(array.type))
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def _ragged_rows(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values of the given rows of a ragged column and their new offsets."""
    starts, ends = offsets[rows], offsets[rows + 1]
    take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(rows) else np.zeros(0, dtype=np.int64)
    return values[take], np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)


def _round_up(width: int) -> int:
    return int(-(-width // PAD_MULTIPLE) * PAD_MULTIPLE)


def _masked_tokens(arrays: InstanceArrays, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masked tokens per row, their positions within the row, their labels), row-major."""
    positions, offsets = _ragged_rows(arrays.masked_positions, arrays.masked_offsets, rows)
    labels, _ = _ragged_rows(arrays.masked_ids, arrays.masked_offsets, rows)
    return np.diff(offsets), positions.astype(np.int64), labels.astype(np.int64)


def collate(arrays: InstanceArrays, rows) -> dict[str, torch.Tensor]:
    """A batch of the given rows, padded (with id 0, [PAD]) to the longest row rounded up to a multiple of 8.

    The masked tokens are listed flat: mlm_batch_index[k], mlm_positions[k] is the k-th
    masked token (row-major order) and mlm_labels[k] its original id.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = arrays.input_offsets[rows], arrays.input_offsets[rows + 1]
    lengths = ends - starts
    width = _round_up(lengths.max())
    input_ids = np.zeros((len(rows), width), dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    token_type_ids = np.zeros((len(rows), width), dtype=np.int64)
    columns = np.arange(width)
    for i, (start, length, segment_a) in enumerate(zip(starts, lengths, arrays.segment_a_length[rows])):
        input_ids[i, :length] = arrays.input_ids[start : start + length]
        attention_mask[i, :length] = 1
        token_type_ids[i] = (columns >= segment_a) & (columns < length)
    counts, positions, labels = _masked_tokens(arrays, rows)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "mlm_batch_index": torch.from_numpy(np.repeat(np.arange(len(rows)), counts)),
        "mlm_positions": torch.from_numpy(positions),
        "mlm_labels": torch.from_numpy(labels),
        "next_sentence_label": torch.from_numpy(arrays.next_sentence_label[rows].astype(np.int64)),
        "instance_lengths": torch.from_numpy(lengths.astype(np.int64)),
    }


def collate_packed(arrays: InstanceArrays, rows) -> dict:
    """The given instances end to end in one row (components.core.packing.end_to_end), with their
    attention laid out per instance (components.core.packing.attention_groups).

    Beside collate's keys: position_ids restart at 0 per instance; cls_positions[i] locates instance
    i's [CLS] in the row; attention_slots, attention_group_counts and attention_inverse
    ([1, width]) feed components.core.grouped_attention. Labels keep the order of `rows`, so the
    losses equal collate's on the same rows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts = arrays.input_offsets[rows]
    lengths = arrays.input_offsets[rows + 1] - starts
    offset, width = packing.end_to_end(lengths, PAD_MULTIPLE)
    input_ids, token_type_ids, position_ids = (np.zeros((1, width), dtype=np.int64) for _ in range(3))
    for start, length, segment_a, first in zip(starts, lengths, arrays.segment_a_length[rows], offset):
        input_ids[0, first : first + length] = arrays.input_ids[start : start + length]
        position_ids[0, first : first + length] = np.arange(length)
        token_type_ids[0, first + segment_a : first + length] = 1
    counts, positions, labels = _masked_tokens(arrays, rows)
    slots, group_counts, inverse = packing.attention_groups(offset, lengths, width)
    real = int(lengths.sum())
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy((np.arange(width) < real).astype(np.int64)[None]),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "position_ids": torch.from_numpy(position_ids),
        "cls_positions": torch.from_numpy(offset),
        "attention_slots": torch.from_numpy(slots),
        "attention_group_counts": torch.from_numpy(group_counts),
        "attention_inverse": torch.from_numpy(inverse.reshape(1, width)),
        "mlm_batch_index": torch.zeros(len(labels), dtype=torch.int64),
        "mlm_positions": torch.from_numpy(positions + np.repeat(offset, counts)),
        "mlm_labels": torch.from_numpy(labels),
        "next_sentence_label": torch.from_numpy(arrays.next_sentence_label[rows].astype(np.int64)),
        "instance_lengths": torch.from_numpy(lengths.astype(np.int64)),
    }


# Read on the host to lay out the attention calls: on a GPU, moved there it would cost a sync per forward.
HOST_KEYS = ("attention_group_counts",)


def batch_to(batch: dict, device) -> dict:
    """The batch's tensors on the device (the HOST_KEYS stay on the CPU)."""
    return {key: value if key in HOST_KEYS else value.to(device, non_blocking=True) for key, value in batch.items()}


def read_arrays(data_uri: str, shard: dict) -> InstanceArrays:
    return InstanceArrays.from_table(instance_format.read_shard(storage.join(data_uri, shard["path"]), shard.get("sha256")))


def evaluation_batches(data_uri: str, manifest: dict, split: str, batch_size: int, max_batches: int | None = None):
    """The split's instances in stored order, in batches (the last one may be short)."""
    produced = 0
    for shard in manifest["splits"].get(split, {}).get("shards", []):
        arrays = read_arrays(data_uri, shard)
        for start in range(0, len(arrays), batch_size):
            if max_batches is not None and produced >= max_batches:
                return
            yield collate(arrays, np.arange(start, min(start + batch_size, len(arrays))))
            produced += 1
