"""From instance shards to model batches: a collator that pads to the batch's longest row,
and a deterministic, resumable stream of training batches.

The training stream is a pure function of (seed, position): epoch e visits this rank's
shards in an order drawn from (seed, e) and each shard's rows in an order drawn from
(seed, e, shard). So the data position of a run is one integer (instances consumed),
and resuming from a checkpoint needs nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch

from components.core import instances as instance_format
from components.core import storage
from components.core.errors import BertpipeError

if TYPE_CHECKING:
    from components.training.dynamic_masking import DynamicMasking

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


class TrainingStream:
    """Endless shuffled batches from one split, repeating epochs; rank r of w reads shards r, r+w, ...

    `position` counts the instances consumed so far; pass it back in to resume exactly.
    """

    def __init__(self, data_uri: str, manifest: dict, *, batch_size: int, seed: int, split: str = "train", rank: int = 0, world_size: int = 1, position: int = 0,
                 masking: DynamicMasking | None = None):
        shards = manifest["splits"].get(split, {}).get("shards", [])
        self.shards = [s for s in shards[rank::world_size] if s["num_instances"] > 0]
        if not self.shards:
            if len(shards) < world_size:
                raise BertpipeError(f"{data_uri} has {len(shards)} {split} shards for {world_size} processes; every process needs at least one shard")
            raise BertpipeError(f"{data_uri} has no {split} instances; create the data with more documents")
        self.data_uri, self.batch_size, self.seed, self.position, self.masking = data_uri, batch_size, seed, position, masking
        self.epoch_size = sum(s["num_instances"] for s in self.shards)
        self._cache: tuple[int, InstanceArrays] | None = None
        self._order_epoch = -1
        self._row_order_cache: tuple = (None, None)

    def _epoch_order(self, epoch: int):
        if epoch != self._order_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._shard_order = rng.permutation(len(self.shards))
            self._shard_ends = np.cumsum([self.shards[i]["num_instances"] for i in self._shard_order])
            self._order_epoch = epoch
        return self._shard_order, self._shard_ends

    def _arrays(self, shard_index: int) -> InstanceArrays:
        if self._cache is None or self._cache[0] != shard_index:
            self._cache = (shard_index, read_arrays(self.data_uri, self.shards[shard_index]))
        return self._cache[1]

    def _row_order(self, epoch: int, shard_index: int, size: int) -> np.ndarray:
        key = (epoch, shard_index)
        if self._row_order_cache[0] != key:
            self._row_order_cache = (key, np.random.default_rng([self.seed, epoch, shard_index]).permutation(size))
        return self._row_order_cache[1]

    def _rows_at(self, position: int, count: int) -> list[tuple[int, int, np.ndarray]]:
        """(epoch, shard, rows) runs covering `count` instances from `position`."""
        epoch, offset = divmod(position, self.epoch_size)
        order, ends = self._epoch_order(epoch)
        runs = []
        while count:
            slot = int(np.searchsorted(ends, offset, side="right"))
            shard_index = int(order[slot])
            start_of_shard = int(ends[slot - 1]) if slot else 0
            size = self.shards[shard_index]["num_instances"]
            permutation = self._row_order(epoch, shard_index, size)
            first = offset - start_of_shard
            n = min(count, size - first)
            runs.append((epoch, shard_index, permutation[first : first + n]))
            count -= n
            offset += n
            if offset == self.epoch_size:
                epoch, offset = epoch + 1, 0
                order, ends = self._epoch_order(epoch)
        return runs

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        parts = [self._collate(epoch, shard, rows) for epoch, shard, rows in self._rows_at(self.position, self.batch_size)]
        self.position += self.batch_size
        return parts[0] if len(parts) == 1 else concat_batches(parts)

    def _collate(self, epoch: int, shard: int, rows: np.ndarray) -> dict[str, torch.Tensor]:
        if self.masking is None:
            return collate(self._arrays(shard), rows)
        return collate(self.masking.apply(self._arrays(shard), rows, epoch, shard), np.arange(len(rows)))

    @property
    def epoch(self) -> float:
        return self.position / self.epoch_size


def concat_batches(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch from collated pieces of several shards (re-padded to the widest piece)."""
    width = max(p["input_ids"].shape[1] for p in parts)
    merged: dict[str, list[torch.Tensor]] = {key: [] for key in parts[0]}
    offset = 0
    for part in parts:
        pad = width - part["input_ids"].shape[1]
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            merged[key].append(torch.nn.functional.pad(part[key], (0, pad)))
        merged["mlm_batch_index"].append(part["mlm_batch_index"] + offset)
        for key in ("mlm_positions", "mlm_labels", "next_sentence_label"):
            merged[key].append(part[key])
        offset += part["input_ids"].shape[0]
    return {key: torch.cat(values) for key, values in merged.items()}


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
