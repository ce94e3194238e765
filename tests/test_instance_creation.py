"""The compiled instance loop: its masking equals components.core.masking's Python (Google's draws) in every mode."""

from __future__ import annotations

import random

import numpy as np
import pytest

from components.data import random_stream as rs
from components.data.instance_creation import _budget_table, _mask
from components.core.masking import MaskCounts, MaskingConfig, continuation_flags, mask_tokens

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "##ed", "the", "game", "run", "##s", "a", "##x"]


def _config(**overrides) -> MaskingConfig:
    settings = dict(
        masked_lm_prob=0.3, max_predictions_per_seq=9, vocab_size=len(VOCAB), cls_id=2, sep_id=3, mask_id=4,
        is_continuation=continuation_flags(VOCAB),
    )
    return MaskingConfig(**{**settings, **overrides})


def _compiled_mask(tokens: list[int], a_length: int, rng: random.Random, config: MaskingConfig):
    state = rs.state_of(rng)
    whole_word = config.whole_word and bool(config.is_continuation)
    options = np.array([whole_word, config.per_word_replacement, config.vocab_size, config.mask_id], dtype=np.int64)
    out = np.array([0, 0, *tokens], dtype=np.int32)  # at an offset, as in the loop's output buffer
    scratch = [np.empty(len(tokens) + 1, np.int64) for _ in range(4)]
    chosen, *tally = _mask(
        out, 2, len(tokens), a_length, state, options, _budget_table(config, len(tokens)),
        np.frombuffer(config.is_continuation, np.uint8), *scratch,
    )
    rs.restore(rng, state)
    positions, labels = scratch[2][:chosen].tolist(), scratch[3][:chosen].tolist()
    return out[2:].tolist(), positions, labels, tally


@pytest.mark.parametrize(
    "modes", [dict(), dict(whole_word=False), dict(per_word_replacement=True), dict(is_continuation=b"")]
)
def test_compiled_masking_equals_python(modes):
    config = _config(**modes)
    generator = random.Random(0)
    for seed in range(300):
        a = [generator.randrange(5, len(VOCAB)) for _ in range(generator.randint(1, 20))]
        b = [generator.randrange(5, len(VOCAB)) for _ in range(generator.randint(1, 20))]
        tokens = [2, *a, 3, *b, 3]
        python_rng, compiled_rng = random.Random(seed), random.Random(seed)
        counts = MaskCounts()
        expected = mask_tokens(tokens, python_rng, config, counts, segment_a_length=len(a) + 2)
        output, positions, labels, tally = _compiled_mask(tokens, len(a), compiled_rng, config)
        assert (output, positions, labels) == tuple(expected)
        assert tally == [counts.masked, counts.random, counts.kept]
        assert compiled_rng.getstate() == python_rng.getstate()
