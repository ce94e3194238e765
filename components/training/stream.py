"""The training stream: endless shuffled batches of one split, deterministic and resumable.

The stream is a pure function of (seed, position): epoch e visits the split's
shards in an order drawn from (seed, e) and each shard's rows in an order drawn
from (seed, e, shard). So the data position of a run is one integer (instances
consumed), and resuming from a checkpoint needs nothing else.

Under DDP every rank walks that same order: each global batch of batch_size x
world_size instances is cut in world_size slices and rank r takes slice r. So w
ranks of batch b see exactly the instances one process of batch w*b sees, every
rank has data whatever the shard count, and no shard is sampled more than another.
The price: every rank reads every shard (one at a time), as one process would.
"""

from __future__ import annotations

import numpy as np
import torch

from components.core.batches import InstanceArrays, collate, collate_packed, read_arrays
from components.core.errors import BertpipeError
from components.training.dynamic_masking import DynamicMasking


class TrainingStream:
    """Endless shuffled batches from one split, repeating epochs; rank r of w takes slice r of each global batch.

    `position` counts the instances consumed so far by all ranks together; pass it back in to resume exactly.
    With `packed`, each batch's instances go end to end into one row (components.core.batches.collate_packed);
    a batch holds `batch_size` instances either way.
    """

    def __init__(self, data_uri: str, manifest: dict, *, batch_size: int, seed: int, split: str = "train", rank: int = 0, world_size: int = 1, position: int = 0,
                 masking: DynamicMasking | None = None, packed: bool = False):
        shards = manifest["splits"].get(split, {}).get("shards", [])
        self.shards = [s for s in shards if s["num_instances"] > 0]
        if not self.shards:
            raise BertpipeError(f"{data_uri} has no {split} instances; create the data with more documents")
        self.data_uri, self.batch_size, self.seed, self.position, self.masking = data_uri, batch_size, seed, position, masking
        self.rank, self.world_size, self.packed = rank, world_size, packed
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
        mine = self.position + self.rank * self.batch_size
        arrays = InstanceArrays.concat([self._rows(epoch, shard, rows) for epoch, shard, rows in self._rows_at(mine, self.batch_size)])
        self.position += self.batch_size * self.world_size
        everything = np.arange(len(arrays))
        return collate_packed(arrays, everything) if self.packed else collate(arrays, everything)

    def _rows(self, epoch: int, shard: int, rows: np.ndarray) -> InstanceArrays:
        if self.masking is None:
            return self._arrays(shard).select(rows)
        return self.masking.apply(self._arrays(shard), rows, epoch, shard)

    @property
    def epoch(self) -> float:
        return self.position / self.epoch_size

