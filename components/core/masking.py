"""Google's masked-LM procedure on token ids: (whole-word) candidate selection and 80/10/10 replacement.

The training collator uses it for dynamic masking (a new mask each time an instance is
seen, RoBERTa-style: call `mask_tokens` on the unmasked row). create-pretraining-data
makes its static masks with the same draws in compiled form (components.data.instance_creation),
in the `random.Random` call order of Google's create_masked_lm_predictions.

Why the algorithm is written twice: the data step must replay Google's draws in Google's
order, interleaved with its document, split and truncation draws, millions of times a
shard, and that is only fast inside the numba-compiled instance loop, which cannot call
Python. Training masks a few batches' rows a second from a per-row `random.Random`, where
this plain version costs nothing measurable and is the readable statement of the algorithm.
tests/test_instance_creation.py keeps the two equal, draw for draw, in every mode.

Google's whole-word masking picks whole words but then draws the 80/10/10 choice
separately for every word piece, so one word can come out as "[MASK] ##ing". That flaw
stays the default here (exactness); `per_word_replacement=True` draws it once per word.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class MaskingConfig:
    """What a mask draw needs besides the tokens: the settings and the vocab's special ids."""

    masked_lm_prob: float
    max_predictions_per_seq: int
    vocab_size: int
    cls_id: int
    sep_id: int
    mask_id: int
    # is_continuation[id] is true for "##" word pieces (used by whole-word masking).
    is_continuation: bytes = b""
    whole_word: bool = True
    per_word_replacement: bool = False

    @classmethod
    def for_vocab(cls, vocab_tokens: list[str], data_settings: Mapping) -> "MaskingConfig":
        """The masking that data settings (create-pretraining-data's, or a manifest's "settings") ask for over a vocab."""
        ids = {token: index for index, token in enumerate(vocab_tokens)}
        return cls(
            masked_lm_prob=data_settings["masked_lm_prob"], max_predictions_per_seq=data_settings["max_predictions_per_seq"],
            vocab_size=len(vocab_tokens), cls_id=ids["[CLS]"], sep_id=ids["[SEP]"], mask_id=ids["[MASK]"],
            is_continuation=continuation_flags(vocab_tokens), whole_word=data_settings["do_whole_word_mask"],
            per_word_replacement=data_settings["per_word_replacement"],
        )


@dataclass
class MaskCounts:
    """How the chosen positions were replaced (for the data statistics)."""

    masked: int = 0
    random: int = 0
    kept: int = 0
    per_instance: list[int] = field(default_factory=list)


def shuffle_exact(items: list, rng: random.Random) -> None:
    """random.Random.shuffle, inlined: the same permutation from the same draws, about 1.7x faster."""
    getrandbits = rng.getrandbits
    for i in range(len(items) - 1, 0, -1):
        n = i + 1
        k = n.bit_length()
        j = getrandbits(k)
        while j >= n:
            j = getrandbits(k)
        items[i], items[j] = items[j], items[i]


def _word_starts(tokens: list[int], candidates: list[int], is_continuation: bytes) -> list[int]:
    """Where each whole word starts in `candidates`: a "##" piece joins the previous candidate's word.

    As in Google's code the [SEP] between A and B does not end a word, so a "##" piece
    that opens B (after truncation) joins A's last word.
    """
    if not candidates:
        return []
    return [0] + [p for p in range(1, len(candidates)) if not is_continuation[tokens[candidates[p]]]]


def mask_tokens(
    tokens: list[int], rng: random.Random, config: MaskingConfig, counts: MaskCounts | None = None, segment_a_length: int | None = None
) -> tuple[list[int], list[int], list[int]]:
    """(masked tokens, sorted masked positions, original ids at those positions), Google's draws in Google's order.

    `tokens` is "[CLS] A [SEP] B [SEP]"; given `segment_a_length` (len(A) + 2) the
    candidates come from the layout instead of a scan for [CLS]/[SEP] (text never
    tokenizes to those: the basic tokenizer splits off the brackets).
    """
    if segment_a_length is None:
        cls_id, sep_id = config.cls_id, config.sep_id
        candidates = [i for i, token in enumerate(tokens) if token != cls_id and token != sep_id]
    else:
        candidates = [*range(1, segment_a_length - 1), *range(segment_a_length, len(tokens) - 1)]
    whole_word = config.whole_word and bool(config.is_continuation)
    starts = _word_starts(tokens, candidates, config.is_continuation) if whole_word else []
    order = list(range(len(starts))) if whole_word else candidates
    # Shuffling word numbers draws exactly what shuffling Google's list of words draws.
    shuffle_exact(order, rng)
    output = list(tokens)
    num_to_predict = min(config.max_predictions_per_seq, max(1, int(round(len(tokens) * config.masked_lm_prob))))
    positions: list[int] = []
    tally = [0, 0, 0]  # [MASK], kept, random
    starts.append(len(candidates))
    for item in order:
        if len(positions) >= num_to_predict:
            break
        word = candidates[starts[item]:starts[item + 1]] if whole_word else (item,)
        # A whole word that would overshoot the budget is skipped, not split.
        # (Google also skips words already covered; words never overlap, so none are.)
        if len(positions) + len(word) > num_to_predict:
            continue
        if config.per_word_replacement:
            _replace_word(output, word, rng, config, tally)
        else:
            for index in word:
                _replace_piece(output, index, rng, config, tally)
        positions.extend(word)
    positions.sort()
    if counts is not None:
        counts.masked += tally[0]
        counts.kept += tally[1]
        counts.random += tally[2]
        counts.per_instance.append(len(positions))
    return output, positions, [tokens[i] for i in positions]


def _replace_piece(output: list[int], index: int, rng: random.Random, config: MaskingConfig, tally: list[int]) -> None:
    """Google's 80/10/10 for one word piece."""
    if rng.random() < 0.8:
        output[index] = config.mask_id
        tally[0] += 1
    elif rng.random() < 0.5:
        tally[1] += 1
    else:
        output[index] = rng.randint(0, config.vocab_size - 1)
        tally[2] += 1


def _replace_word(output: list[int], word, rng: random.Random, config: MaskingConfig, tally: list[int]) -> None:
    """The fix for per-piece draws: one 80/10/10 decision for the whole word (random ids still per piece)."""
    if rng.random() < 0.8:
        for index in word:
            output[index] = config.mask_id
        tally[0] += len(word)
    elif rng.random() < 0.5:
        tally[1] += len(word)
    else:
        for index in word:
            output[index] = rng.randint(0, config.vocab_size - 1)
        tally[2] += len(word)


def continuation_flags(vocab_tokens: list[str]) -> bytes:
    """is_continuation as bytes indexed by token id."""
    return bytes(1 if token.startswith("##") else 0 for token in vocab_tokens)
