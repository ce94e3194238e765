"""From instance shards to model batches: flat arrays of a shard, a collator that pads to the
batch's longest row, one that packs several instances per row (components.core.packing), and
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


def collate_packed(arrays: InstanceArrays, rows, row_width: int, grouped: bool | None = None) -> dict:
    """The given instances packed into rows of at most row_width tokens (components.core.packing.pack:
    first-fit decreasing, then the narrowest width, a multiple of 8, that needs no more rows).

    Beside collate's keys: position_ids restart at 0 per instance, instance_ids[r, j] is
    1 + the index of the instance token (r, j) belongs to (0: padding), and cls_rows[i],
    cls_positions[i] locate instance i's [CLS]. Labels keep the order of `rows`, so the
    losses equal collate's on the same rows; mlm_batch_index/mlm_positions index the packed rows.
    With `grouped` (None: where packing.grouped_attention_pays_off), attention_groups (a tuple of
    [n, width] tensors) and attention_inverse ([rows, width]) lay out attention per instance
    (components.core.packing.attention_groups) instead of the block-diagonal mask.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts = arrays.input_offsets[rows]
    lengths = arrays.input_offsets[rows + 1] - starts
    row_of, offset, width = packing.pack(lengths, row_width, PAD_MULTIPLE)
    count = int(row_of.max()) + 1 if len(rows) else 0
    input_ids, token_type_ids, position_ids, instance_ids = (np.zeros((count, width), dtype=np.int64) for _ in range(4))
    for i, (start, length, segment_a, row, first) in enumerate(zip(starts, lengths, arrays.segment_a_length[rows], row_of, offset)):
        span = slice(first, first + length)
        input_ids[row, span] = arrays.input_ids[start : start + length]
        position_ids[row, span] = np.arange(length)
        token_type_ids[row, first + segment_a : first + length] = 1
        instance_ids[row, span] = i + 1
    counts, positions, labels = _masked_tokens(arrays, rows)
    if grouped is None:
        grouped = packing.grouped_attention_pays_off(lengths, count, width)
    attention = {}
    if grouped:
        groups, inverse = packing.attention_groups(row_of * width + offset, lengths, count * width)
        attention = {"attention_groups": tuple(torch.from_numpy(slots) for slots in groups), "attention_inverse": torch.from_numpy(inverse.reshape(count, width))}
    return attention | {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy((instance_ids > 0).astype(np.int64)),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "position_ids": torch.from_numpy(position_ids),
        "instance_ids": torch.from_numpy(instance_ids),
        "cls_rows": torch.from_numpy(row_of),
        "cls_positions": torch.from_numpy(offset),
        "mlm_batch_index": torch.from_numpy(np.repeat(row_of, counts)),
        "mlm_positions": torch.from_numpy(positions + np.repeat(offset, counts)),
        "mlm_labels": torch.from_numpy(labels),
        "next_sentence_label": torch.from_numpy(arrays.next_sentence_label[rows].astype(np.int64)),
        "instance_lengths": torch.from_numpy(lengths.astype(np.int64)),
    }


def batch_to(batch: dict, device) -> dict:
    """The batch's tensors on the device (attention_groups: a tuple of them)."""
    move = lambda value: value.to(device, non_blocking=True)  # noqa: E731
    return {key: tuple(map(move, value)) if isinstance(value, tuple) else move(value) for key, value in batch.items()}


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
