"""Run Google's own create_pretraining_data.py and tokenization.py (PyPI `bert-tensorflow`) without TensorFlow.

The reference touches TensorFlow only for flags, file reading, globbing and logging
(TFRecord writing is skipped: we take its instances in memory). A small stand-in module
is put in sys.modules as `tensorflow` (and `absl`) while the reference modules load.
The 1.0.4 release predates whole-word masking; `whole_word_mask=True` swaps in the
current google-research/bert masking (the same loop over groups of "##" pieces).
"""

from __future__ import annotations

import glob
import importlib
import logging
import random
import sys
import types
from functools import lru_cache
from typing import Iterator


class _Flags:
    """Enough of absl/tf flags for the reference: DEFINE_* records the default."""

    def __init__(self):
        self.FLAGS = types.SimpleNamespace()

    def _define(self, name, default, *_args, **_kwargs):
        setattr(self.FLAGS, name, default)

    DEFINE_string = DEFINE_bool = DEFINE_integer = DEFINE_float = _define

    def mark_flag_as_required(self, _name):
        pass


def _stand_ins() -> dict[str, types.ModuleType]:
    flags = _Flags()
    flags_module = types.ModuleType("flags")
    for name in ("FLAGS", "DEFINE_string", "DEFINE_bool", "DEFINE_integer", "DEFINE_float", "mark_flag_as_required"):
        setattr(flags_module, name, getattr(flags, name))
    v1 = types.ModuleType("tensorflow.compat.v1")
    v1.flags = flags_module
    v1.gfile = types.SimpleNamespace(GFile=lambda path, mode="r": open(path, mode, encoding="utf-8"), Glob=glob.glob)
    log = logging.getLogger("google_reference")
    v1.logging = types.SimpleNamespace(info=log.debug, set_verbosity=lambda _level: None, INFO=logging.INFO)
    compat = types.ModuleType("tensorflow.compat")
    compat.v1 = v1
    tensorflow = types.ModuleType("tensorflow")
    tensorflow.compat = compat
    absl = types.ModuleType("absl")
    absl.flags = flags_module
    return {"tensorflow": tensorflow, "tensorflow.compat": compat, "tensorflow.compat.v1": v1, "absl": absl, "absl.flags": flags_module}


@lru_cache(maxsize=1)
def reference_modules():
    """(create_pretraining_data, tokenization) from bert-tensorflow, imported against the stand-in."""
    names = list(_stand_ins())
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(_stand_ins())
    try:
        tokenization = importlib.import_module("bert.tokenization")
        create = importlib.import_module("bert.create_pretraining_data")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return create, tokenization


def _whole_word_masking(tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng):
    """google-research/bert master's create_masked_lm_predictions with do_whole_word_mask=True."""
    groups = []
    for i, token in enumerate(tokens):
        if token in ("[CLS]", "[SEP]"):
            continue
        if groups and token.startswith("##"):
            groups[-1].append(i)
        else:
            groups.append([i])
    rng.shuffle(groups)
    output = list(tokens)
    budget = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    chosen, covered = [], set()
    for group in groups:
        if len(chosen) >= budget:
            break
        if len(chosen) + len(group) > budget or any(i in covered for i in group):
            continue
        for i in group:
            covered.add(i)
            if rng.random() < 0.8:
                output[i] = "[MASK]"
            elif rng.random() < 0.5:
                output[i] = tokens[i]
            else:
                output[i] = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            chosen.append((i, tokens[i]))
    chosen.sort()
    return output, [i for i, _ in chosen], [label for _, label in chosen]


def iter_reference_rows(
    input_file: str, vocab_file: str, *, do_lower_case: bool = True, max_seq_length: int = 128, dupe_factor: int = 1,
    short_seq_prob: float = 0.1, masked_lm_prob: float = 0.15, max_predictions_per_seq: int = 20, seed: int = 12345,
    whole_word_mask: bool = False,
) -> Iterator[dict]:
    """Google's instances as rows of our Parquet schema (input_ids, segment_a_length, ...), converted one at a time."""
    create, tokenization = reference_modules()
    tokenizer = tokenization.FullTokenizer(vocab_file=vocab_file, do_lower_case=do_lower_case)
    original = create.create_masked_lm_predictions
    if whole_word_mask:
        create.create_masked_lm_predictions = _whole_word_masking
    try:
        found = create.create_training_instances(
            [input_file], tokenizer, max_seq_length, dupe_factor, short_seq_prob, masked_lm_prob, max_predictions_per_seq, random.Random(seed)
        )
    finally:
        create.create_masked_lm_predictions = original
    for instance in found:
        yield {
            "input_ids": tokenizer.convert_tokens_to_ids(instance.tokens),
            "segment_a_length": instance.segment_ids.count(0),
            "masked_lm_positions": list(instance.masked_lm_positions),
            "masked_lm_ids": tokenizer.convert_tokens_to_ids(instance.masked_lm_labels),
            "next_sentence_label": int(instance.is_random_next),
        }


def reference_instances(input_file: str, vocab_file: str, **settings) -> list[dict]:
    """All of Google's instances as rows (see iter_reference_rows for the settings)."""
    return list(iter_reference_rows(input_file, vocab_file, **settings))


def reference_tokenize(vocab_file: str, lines: list[str], do_lower_case: bool = True) -> list[list[int]]:
    """Google's FullTokenizer ids for each line."""
    _, tokenization = reference_modules()
    tokenizer = tokenization.FullTokenizer(vocab_file=vocab_file, do_lower_case=do_lower_case)
    return [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line)) for line in lines]

