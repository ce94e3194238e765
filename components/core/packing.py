"""Sequence packing: a batch's instances end to end in one row, so no compute goes to padding.

Corpora of short documents make mostly short instances: padded to the batch's longest row,
real tokens are ~40% of a 512-token batch. Packed into rows of max_seq_length, a batch still
leaves the rows' ends empty (7% of the slots at 128, where most instances are longer than half a
row and no two share one). So the linear layers run over one row holding every instance of the
batch, back to back (padded only to a multiple of 8), position ids restart per instance and NSP
reads each instance's own [CLS] (components.core.models.MaskedPretrainingModel). Attention runs
per instance: each alone in a row of a group of instances of about its length
(components.core.grouped_attention), about the sum of the instances' squared lengths, where a
block-diagonal mask over packed rows costs the rows' whole area (on CPU in training, SDPA's math
kernel pays for every masked score). The losses equal the unpacked ones.
"""

from __future__ import annotations

import numpy as np


def end_to_end(lengths, multiple: int = 8) -> tuple[np.ndarray, int]:
    """(offset of each item, width): the items back to back in input order, in one row rounded up to `multiple`."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.cumsum(lengths) - lengths, max(multiple, -(-int(lengths.sum()) // multiple) * multiple)


# Widths of the attention groups: an instance joins the narrowest that holds it (at most 1.5x its length),
# few enough that a batch makes a handful of attention calls per layer.
GROUP_WIDTHS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def attention_groups(starts, lengths, total_tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slots, counts, inverse) for attention per instance. counts[k]: the instances whose narrowest
    group width is GROUP_WIDTHS[k]. slots: those groups' rows, [counts[k], GROUP_WIDTHS[k]] each,
    flattened and concatenated in that order; a row lists the token slots (indices into the flat
    rows x width batch) of one instance, -1 past its end. inverse[t]: where token slot t's output
    lies among the slots, or their total (a zero row appended there) for padding slots.
    Fixed in structure (three arrays whatever the batch), so torch.compile sees one signature."""
    starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    widths = group_widths(lengths)
    rows, counts, placed = [], np.zeros(len(GROUP_WIDTHS), dtype=np.int64), 0
    inverse = np.full(total_tokens, -1, dtype=np.int64)
    for k, width in enumerate(GROUP_WIDTHS):
        members = np.flatnonzero(widths == width)
        counts[k] = len(members)
        columns = np.arange(width)
        slots = np.where(columns < lengths[members, None], starts[members, None] + columns, -1).ravel()
        real = slots >= 0
        inverse[slots[real]] = placed + np.flatnonzero(real)
        rows.append(slots)
        placed += slots.size
    inverse[inverse < 0] = placed
    return np.concatenate(rows), counts, inverse


def group_widths(lengths) -> np.ndarray:
    """The group width of each instance: the narrowest of GROUP_WIDTHS that holds it."""
    return np.asarray(GROUP_WIDTHS)[np.searchsorted(GROUP_WIDTHS, np.asarray(lengths, dtype=np.int64))]
