"""Masking: Google's draws, whole-word grouping, the per-word fix, and reuse for dynamic masking."""

from __future__ import annotations

import random

from components.core.masking import MaskCounts, MaskingConfig, continuation_flags, mask_tokens, shuffle_exact

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "##ed", "the", "game", "run", "##s", "a"]
IDS = {t: i for i, t in enumerate(VOCAB)}


def _config(**overrides) -> MaskingConfig:
    settings = dict(
        masked_lm_prob=0.5, max_predictions_per_seq=20, vocab_size=len(VOCAB), cls_id=2, sep_id=3, mask_id=4,
        is_continuation=continuation_flags(VOCAB), whole_word=True,
    )
    return MaskingConfig(**{**settings, **overrides})


def _row(*tokens: str) -> list[int]:
    return [IDS[t] for t in tokens]


def test_shuffle_exact_equals_random_shuffle():
    for n in (0, 1, 2, 7, 300):
        ours, theirs = random.Random(n), random.Random(n)
        a, b = list(range(n)), list(range(n))
        shuffle_exact(a, ours)
        theirs.shuffle(b)
        assert a == b and ours.random() == theirs.random()


def test_whole_words_are_masked_together_and_never_specials():
    row = _row("[CLS]", "play", "##ing", "the", "game", "[SEP]", "run", "##s", "play", "##ed", "[SEP]")
    for seed in range(200):
        _, positions, labels = mask_tokens(row, random.Random(seed), _config())
        assert positions == sorted(positions) and not {0, 5, 10} & set(positions)
        for start, end in ((1, 2), (6, 7), (8, 9)):
            assert (start in positions) == (end in positions)
        assert labels == [row[p] for p in positions]


def test_a_continuation_opening_segment_b_joins_the_last_word_of_a():
    """Google's grouping skips [SEP] without closing the word: "game [SEP] ##s" is one word."""
    row = _row("[CLS]", "the", "game", "[SEP]", "##s", "a", "[SEP]")
    for seed in range(100):
        _, positions, _ = mask_tokens(row, random.Random(seed), _config())
        assert (2 in positions) == (4 in positions)


def test_budget_is_round_of_length_times_prob_capped():
    row = _row("[CLS]", *["the"] * 40, "[SEP]", *["a"] * 40, "[SEP]")
    _, positions, _ = mask_tokens(row, random.Random(0), _config(masked_lm_prob=0.15, max_predictions_per_seq=100))
    assert len(positions) == round(83 * 0.15)
    _, positions, _ = mask_tokens(row, random.Random(0), _config(masked_lm_prob=0.15, max_predictions_per_seq=5))
    assert len(positions) == 5


def test_per_word_replacement_makes_one_choice_per_word():
    row = _row("[CLS]", "play", "##ing", "##ed", "the", "[SEP]", "run", "##s", "[SEP]")
    mixed = {False: 0, True: 0}
    for seed in range(300):
        for fixed in (False, True):
            # A large vocab_size: a random id is then almost never [MASK] or the original token.
            out, positions, _ = mask_tokens(row, random.Random(seed), _config(per_word_replacement=fixed, vocab_size=10**6))
            if 1 in positions:
                kinds = {"mask" if out[p] == IDS["[MASK]"] else "kept" if out[p] == row[p] else "random" for p in (1, 2, 3)}
                mixed[fixed] += len(kinds) > 1
    assert mixed[True] == 0 and mixed[False] > 30


def test_counts_add_up():
    counts = MaskCounts()
    row = _row("[CLS]", *["game"] * 60, "[SEP]", *["run"] * 60, "[SEP]")
    for seed in range(200):
        mask_tokens(row, random.Random(seed), _config(masked_lm_prob=0.15), counts)
    total = counts.masked + counts.random + counts.kept
    assert total == sum(counts.per_instance) == 200 * 18
    assert 0.75 < counts.masked / total < 0.85 and 0.07 < counts.kept / total < 0.13


def test_dynamic_masking_gives_a_new_mask_each_epoch():
    """The collator's use: the same unmasked row, a new random.Random draw per epoch."""
    row = _row("[CLS]", *["game", "play", "##ing"] * 10, "[SEP]", *["run", "##s"] * 10, "[SEP]")
    rng = random.Random(1)
    masks = {tuple(mask_tokens(row, rng, _config(masked_lm_prob=0.15), segment_a_length=32)[1]) for _ in range(5)}
    assert len(masks) == 5
