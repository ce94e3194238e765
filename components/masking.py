"""Google's masked-LM procedure on token ids: (whole-word) candidate selection and 80/10/10 replacement.

Used twice: by create-pretraining-data for the static masks stored in the shards
(same `random.Random` call order as Google's create_masked_lm_predictions), and by
the training collator for dynamic masking (a new mask each
time an instance is seen, RoBERTa-style: call `mask_tokens` on the unmasked row).

Google's whole-word masking picks whole words but then draws the 80/10/10 choice
separately for every word piece, so one word can come out as "[MASK] ##ing". That flaw
stays the default here (exactness); `per_word_replacement=True` draws it once per word.
"""

from __future__ import annotations

import random
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


@dataclass
class MaskCounts:
    """How the chosen positions were replaced (for the data statistics)."""

    masked: int = 0
    random: int = 0
    kept: int = 0
    per_instance: list[int] = field(default_factory=list)


def _candidates(tokens: list[int], config: MaskingConfig) -> list[list[int]]:
    specials = (config.cls_id, config.sep_id)
    candidates: list[list[int]] = []
    continuation = config.is_continuation if config.whole_word else b""
    for index, token in enumerate(tokens):
        if token in specials:
            continue
        if continuation and candidates and continuation[token]:
            candidates[-1].append(index)
        else:
            candidates.append([index])
    return candidates


def _replacement(original: int, rng: random.Random, config: MaskingConfig, counts: MaskCounts | None) -> int:
    if rng.random() < 0.8:
        if counts:
            counts.masked += 1
        return config.mask_id
    if rng.random() < 0.5:
        if counts:
            counts.kept += 1
        return original
    if counts:
        counts.random += 1
    return rng.randint(0, config.vocab_size - 1)


def mask_tokens(
    tokens: list[int], rng: random.Random, config: MaskingConfig, counts: MaskCounts | None = None
) -> tuple[list[int], list[int], list[int]]:
    """(masked tokens, sorted masked positions, original ids at those positions), Google's draws in Google's order."""
    candidates = _candidates(tokens, config)
    rng.shuffle(candidates)
    output = list(tokens)
    num_to_predict = min(config.max_predictions_per_seq, max(1, int(round(len(tokens) * config.masked_lm_prob))))
    positions: list[int] = []
    for word in candidates:
        if len(positions) >= num_to_predict:
            break
        # A whole word that would overshoot the budget is skipped, not split.
        if len(positions) + len(word) > num_to_predict:
            continue
        # (Google also skips words already covered; candidates never overlap, so none are.)
        if config.per_word_replacement:
            _replace_word(output, word, tokens, rng, config, counts)
        else:
            for index in word:
                output[index] = _replacement(tokens[index], rng, config, counts)
        positions.extend(word)
    positions.sort()
    if counts:
        counts.per_instance.append(len(positions))
    return output, positions, [tokens[i] for i in positions]


def _replace_word(output: list[int], word: list[int], tokens: list[int], rng: random.Random, config: MaskingConfig, counts: MaskCounts | None) -> None:
    """The fix for per-piece draws: one 80/10/10 decision for the whole word (random ids still per piece)."""
    if rng.random() < 0.8:
        choice = "masked"
        for index in word:
            output[index] = config.mask_id
    elif rng.random() < 0.5:
        choice = "kept"
    else:
        choice = "random"
        for index in word:
            output[index] = rng.randint(0, config.vocab_size - 1)
    if counts:
        setattr(counts, choice, getattr(counts, choice) + len(word))


def continuation_flags(vocab_tokens: list[str]) -> bytes:
    """is_continuation as bytes indexed by token id."""
    return bytes(1 if token.startswith("##") else 0 for token in vocab_tokens)
