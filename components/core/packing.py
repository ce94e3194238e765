"""Sequence packing: several instances per row, so short instances do not pay for padding.

Corpora of short documents make mostly short instances: padded to the batch's longest row,
real tokens are ~40% of a 512-token batch. Packing places a batch's instances into rows of
max_seq_length tokens (first-fit decreasing: the longest first, each into the first row with
room). The model then confines attention to each instance (a block-diagonal mask), restarts
position ids per instance and reads each instance's NSP from its own [CLS]
(components.core.models.MaskedPretrainingModel); the losses equal the unpacked ones.

The block-diagonal mask still computes attention over whole rows: rows x width^2 scores, most
of them masked when a 512-token row holds four instances. On CPU, training attention (dropout
on) runs SDPA's math kernel, whose cost follows that area whatever the mask says. So where it
pays off, attention runs instead on groups of instances of about the same length, each
instance alone in a group row (components.core.grouped_attention): about the sum of the
instances' squared lengths, a third of the rows' area on short documents at 512.
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


# Widths of the attention groups: an instance joins the narrowest that holds it (at most 1.5x its length),
# few enough that a batch makes a handful of attention calls per layer.
GROUP_WIDTHS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
# Grouped attention costs a gather per group and more, smaller calls: used only where it at least halves the score area.
GROUPED_AREA_SHARE = 0.5


def attention_groups(starts, lengths, total_tokens: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(groups, inverse) for attention per instance. groups: one [n, width] array per width of GROUP_WIDTHS that
    holds instances: row k lists the token slots (indices into the flat rows x width batch) of one
    instance, -1 past its end. inverse[t]: where token slot t's output lies among the groups' slots
    (concatenated, row-major), or their total (a zero row appended there) for padding slots."""
    starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    widths = group_widths(lengths)
    groups, placed = [], 0
    inverse = np.full(total_tokens, -1, dtype=np.int64)
    for width in np.unique(widths):
        members = np.flatnonzero(widths == width)
        columns = np.arange(width)
        slots = np.where(columns < lengths[members, None], starts[members, None] + columns, -1)
        real = slots.ravel() >= 0
        inverse[slots.ravel()[real]] = placed + np.flatnonzero(real)
        groups.append(slots)
        placed += slots.size
    inverse[inverse < 0] = placed
    return groups, inverse


def group_widths(lengths) -> np.ndarray:
    """The group width of each instance: the narrowest of GROUP_WIDTHS that holds it."""
    return np.asarray(GROUP_WIDTHS)[np.searchsorted(GROUP_WIDTHS, np.asarray(lengths, dtype=np.int64))]


def grouped_attention_pays_off(lengths, rows: int, width: int) -> bool:
    """True where the groups' score area is at most GROUPED_AREA_SHARE of the packed rows' (rows x width^2)."""
    return float((group_widths(lengths).astype(np.float64) ** 2).sum()) <= GROUPED_AREA_SHARE * rows * width * width
