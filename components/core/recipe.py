"""Google's two-phase recipe, in one place: most steps at 128 tokens, a short second phase at 512.

Phase 2 starts from phase 1's weights with a fresh optimizer and schedule; each length has
its own pretraining data (max_predictions_per_seq 20 at 128, 80 at 512).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    number: int
    max_seq_length: int
    max_predictions_per_seq: int


PHASES = (Phase(1, 128, 20), Phase(2, 512, 80))
