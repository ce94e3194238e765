"""The settings of create-pretraining-data: every one changes the output (they are recorded in the
manifest; equal settings, corpus and vocab give equal bytes). How many local worker processes run
is not among them: the output does not depend on it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from components.core.recipe import PHASES
from components.core.settings import setting

log = logging.getLogger(__name__)

STEP_NAME = "create-pretraining-data"
_PHASE_1, _PHASE_2 = PHASES
# Seeds travel through KFP as JSON numbers (float64): larger integers would arrive changed.
MAX_SEED = 2**53


@dataclass(frozen=True)
class DataSettings:
    """Google's create_pretraining_data.py flags, plus the document split, sharding and two fixes that are off by default."""

    max_seq_length: int = setting(
        _PHASE_1.max_seq_length, "maximum tokens per instance, [CLS] and [SEP]s included "
        f"(Google: {_PHASE_1.max_seq_length} for phase 1, {_PHASE_2.max_seq_length} for phase 2)", minimum=5, maximum=32767)
    max_predictions_per_seq: int = setting(
        _PHASE_1.max_predictions_per_seq, "maximum masked tokens per instance "
        f"(Google: {_PHASE_1.max_predictions_per_seq} at {_PHASE_1.max_seq_length}, {_PHASE_2.max_predictions_per_seq} at {_PHASE_2.max_seq_length})",
        minimum=1)
    masked_lm_prob: float = setting(0.15, "fraction of tokens to mask", above=0, below=1)
    short_seq_prob: float = setting(0.1, "probability of a shorter target length, so the model also sees short inputs", minimum=0, maximum=1)
    dupe_factor: int = setting(1, "how many times each train document is used, each time with different masks and pairs (dev and test: once)", minimum=1)
    do_whole_word_mask: bool = setting(True, "mask all WordPiece pieces of a word together")
    per_word_replacement: bool = setting(
        False, "draw the 80/10/10 [MASK]/random/keep choice once per whole word (a fix of Google's per-piece draw; off = exact reference)")
    dynamic_masking: bool = setting(
        False, "store the train split unmasked; training masks it anew each epoch (RoBERTa-style). Dev and test keep fixed masks")
    dev_fraction: float = setting(0.02, "fraction of documents held out for validation during training", minimum=0, below=1)
    test_fraction: float = setting(0.02, "fraction of documents held out for the final evaluation", minimum=0, below=1)
    seed: int = setting(12345, "random seed of instance creation (same seed and inputs: byte-identical data)", minimum=0, maximum=MAX_SEED)
    shard_size_mb: float = setting(16.0, "corpus text per shard; memory grows with the shard, not the corpus", above=0)

    def cross_checks(self) -> list[str]:
        if self.dev_fraction + self.test_fraction >= 1.0:
            return [f"dev_fraction + test_fraction = {self.dev_fraction + self.test_fraction:g}: must leave documents for training (< 1)"]
        return []


def warn_if_unusual(settings: DataSettings) -> None:
    """Log settings that are allowed but probably not meant."""
    expected = settings.masked_lm_prob * settings.max_seq_length
    if not 0.8 * expected <= settings.max_predictions_per_seq <= 1.5 * expected:
        log.warning(
            "max_predictions_per_seq=%d is far from masked_lm_prob x max_seq_length = %.1f: %s",
            settings.max_predictions_per_seq, expected,
            "long sequences get fewer masks than masked_lm_prob asks" if settings.max_predictions_per_seq < expected else "the cap never binds",
        )
