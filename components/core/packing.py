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


def first_fit_decreasing(lengths, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, offset) of each item: items packed into rows of `capacity`, longest first (ties in
    input order, so the result is a pure function of the lengths). No item may exceed the capacity."""
    lengths = [int(n) for n in lengths]
    if lengths and max(lengths) > capacity:
        raise ValueError(f"an item of {max(lengths)} does not fit in rows of {capacity}")
    rows, offsets, filled = [0] * len(lengths), [0] * len(lengths), []
    for item in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, used in enumerate(filled) if used + lengths[item] <= capacity), len(filled))
        if row == len(filled):
            filled.append(0)
        rows[item], offsets[item] = row, filled[row]
        filled[row] += lengths[item]
    return np.array(rows, dtype=np.int64), np.array(offsets, dtype=np.int64)


def pack(lengths, capacity: int, multiple: int = 8) -> tuple[np.ndarray, np.ndarray, int]:
    """(row, offset, width): first-fit decreasing into the fewest rows of `capacity`, then the
    narrowest width (a multiple of `multiple`) at which those rows still suffice. A batch of
    short instances thus gets rows narrower than max_seq_length instead of one half-empty row."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if not len(lengths):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), multiple
    rows, offsets = first_fit_decreasing(lengths, capacity)
    count = int(rows.max()) + 1
    units = lambda tokens: -(-int(tokens) // multiple)  # noqa: E731
    low, high = units(max(lengths.max(), -(-lengths.sum() // count))), units(np.bincount(rows, weights=lengths).max())
    while low < high:  # the narrowest width that needs no more rows (binary search: FFD needs fewer rows as rows widen)
        middle = (low + high) // 2
        narrower = first_fit_decreasing(lengths, min(middle * multiple, capacity))
        if narrower[0].max() + 1 <= count:
            high, (rows, offsets) = middle, narrower
        else:
            low = middle + 1
    return rows, offsets, high * multiple


def block_diagonal_mask(instance_ids):
    """[rows, 1, width, width] boolean attention mask: a token attends to the tokens of its own
    instance. Padding (instance id 0) attends to padding only, so no attention row is empty
    (an empty row would make SDPA return NaN, which the next layer would spread)."""
    return (instance_ids[:, None, :, None] == instance_ids[:, None, None, :])
