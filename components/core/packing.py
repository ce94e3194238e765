"""Sequence packing: several instances per row, so short instances do not pay for padding.

Corpora of short documents make mostly short instances: padded to the batch's longest row,
real tokens are ~40% of a 512-token batch. Packing places a batch's instances into rows of
max_seq_length tokens (first-fit decreasing: the longest first, each into the first row with
room). The model then confines attention to each instance (a block-diagonal mask), restarts
position ids per instance and reads each instance's NSP from its own [CLS]
(components.core.models.MaskedPretrainingModel); the losses equal the unpacked ones.
"""

from __future__ import annotations

import numpy as np


def first_fit_decreasing(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, offset) of each item: items packed into rows of `capacity`, longest first (ties in
    input order, so the result is a pure function of the lengths). No item may exceed the capacity."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and lengths.max() > capacity:
        raise ValueError(f"an item of {lengths.max()} does not fit in rows of {capacity}")
    rows, offsets = np.zeros(len(lengths), dtype=np.int64), np.zeros(len(lengths), dtype=np.int64)
    filled = np.zeros(len(lengths), dtype=np.int64)  # at most one row per item
    used = 0
    for item in np.argsort(-lengths, kind="stable"):
        fits = np.flatnonzero(filled[:used] + lengths[item] <= capacity)
        row = int(fits[0]) if len(fits) else used
        used += row == used
        rows[item], offsets[item] = row, filled[row]
        filled[row] += lengths[item]
    return rows, offsets


def block_diagonal_mask(instance_ids):
    """[rows, 1, width, width] boolean attention mask: a token attends to the tokens of its own
    instance. Padding (instance id 0) attends to padding only, so no attention row is empty
    (an empty row would make SDPA return NaN, which the next layer would spread)."""
    return (instance_ids[:, None, :, None] == instance_ids[:, None, None, :])
