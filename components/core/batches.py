"""From instance shards to model batches: flat arrays of a shard, a collator that pads to the
batch's longest row, and the evaluation batches (stored order). The training stream, which
shuffles and masks, is the training step's (components/training/stream.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from components.core import instances as instance_format
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
            return column.values.to_numpy(), column.offsets.to_numpy()

        ids, ids_offsets = flat("input_ids")
        positions, masked_offsets = flat("masked_lm_positions")
        labels, _ = flat("masked_lm_ids")
        return cls(
            ids, ids_offsets, table.column("segment_a_length").to_numpy(), positions, labels, masked_offsets, table.column("next_sentence_label").to_numpy()
        )

    def __len__(self) -> int:
        return len(self.segment_a_length)


def collate(arrays: InstanceArrays, rows) -> dict[str, torch.Tensor]:
    """A batch of the given rows, padded (with id 0, [PAD]) to the longest row rounded up to a multiple of 8.

    The masked tokens are listed flat: mlm_batch_index[k], mlm_positions[k] is the k-th
    masked token (row-major order) and mlm_labels[k] its original id.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = arrays.input_offsets[rows], arrays.input_offsets[rows + 1]
    lengths = ends - starts
    width = int(-(-lengths.max() // PAD_MULTIPLE) * PAD_MULTIPLE)
    input_ids = np.zeros((len(rows), width), dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    token_type_ids = np.zeros((len(rows), width), dtype=np.int64)
    columns = np.arange(width)
    for i, (start, length, segment_a) in enumerate(zip(starts, lengths, arrays.segment_a_length[rows])):
        input_ids[i, :length] = arrays.input_ids[start : start + length]
        attention_mask[i, :length] = 1
        token_type_ids[i] = (columns >= segment_a) & (columns < length)
    masked_starts, masked_ends = arrays.masked_offsets[rows], arrays.masked_offsets[rows + 1]
    counts = masked_ends - masked_starts
    take = np.concatenate([np.arange(s, e) for s, e in zip(masked_starts, masked_ends)]) if len(rows) else np.zeros(0, dtype=np.int64)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "mlm_batch_index": torch.from_numpy(np.repeat(np.arange(len(rows)), counts)),
        "mlm_positions": torch.from_numpy(arrays.masked_positions[take].astype(np.int64)),
        "mlm_labels": torch.from_numpy(arrays.masked_ids[take].astype(np.int64)),
        "next_sentence_label": torch.from_numpy(arrays.next_sentence_label[rows].astype(np.int64)),
    }


def batch_to(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


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
