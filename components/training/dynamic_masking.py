"""RoBERTa-style dynamic masking: a fresh mask for every training row each time it is seen.

Data made with `dynamic_masking` stores its train split unmasked; the training
stream calls `DynamicMasking.apply` on the rows of each batch. The draw is
Google's (whole-word, 80/10/10, max_predictions_per_seq), seeded by
(seed, epoch, shard, row): a resumed run redraws exactly the masks the
interrupted one would have used, and each epoch sees new ones.
"""

from __future__ import annotations

import random

import numpy as np

from components.core.batches import InstanceArrays
from components.core.masking import MaskingConfig, mask_tokens


class DynamicMasking:
    def __init__(self, config: MaskingConfig, seed: int):
        self.config, self.seed = config, seed

    def apply(self, arrays: InstanceArrays, rows: np.ndarray, epoch: int, shard: int) -> InstanceArrays:
        """The rows, masked, as new InstanceArrays (row i of the result is rows[i])."""
        ids, positions, labels = [], [], []
        for row in rows.tolist():
            tokens = arrays.input_ids[arrays.input_offsets[row] : arrays.input_offsets[row + 1]].tolist()
            # A string seed is hashed with SHA-512: the same draw in every process and run.
            rng = random.Random(f"{self.seed}/{epoch}/{shard}/{row}")
            masked, row_positions, row_labels = mask_tokens(tokens, rng, self.config, segment_a_length=int(arrays.segment_a_length[row]))
            ids.append(masked)
            positions.append(row_positions)
            labels.append(row_labels)
        return InstanceArrays(
            input_ids=np.fromiter((t for row in ids for t in row), dtype=np.int32),
            input_offsets=np.cumsum([0] + [len(row) for row in ids]),
            segment_a_length=arrays.segment_a_length[rows],
            masked_positions=np.fromiter((p for row in positions for p in row), dtype=np.int16),
            masked_ids=np.fromiter((t for row in labels for t in row), dtype=np.int32),
            masked_offsets=np.cumsum([0] + [len(row) for row in positions]),
            next_sentence_label=arrays.next_sentence_label[rows],
        )
