"""Google's two-phase recipe: most steps at 128 tokens, then a short phase at 512 (phase 2 starts from phase 1's weights).

The data step makes one data folder per phase, with masks capped at `max_predictions_per_seq`
(about masked_lm_prob x max_seq_length); the training step trains the phases in order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    number: int
    max_seq_length: int
    max_predictions_per_seq: int


PHASES = (Phase(1, 128, 20), Phase(2, 512, 80))
