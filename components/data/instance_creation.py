"""Google's create_pretraining_data algorithm on token ids, for one set of documents (one shard).

Same steps and the same `random.Random` draws in the same order as Google's
create_training_instances: shuffle the documents; `dupe_factor` passes over them; per
document a target length (short with probability short_seq_prob); chunks of whole
sentences up to the target; a random split point into A and B; B is "random next"
(from another document, unused sentences put back) half of the time or when the chunk
has one sentence; truncation of the longer side from the front or back at random;
masking (Google's create_masked_lm_predictions, as components.core.masking does it in
Python); a final shuffle of the instances. Given the same documents and seed, the
instances equal Google's.

The loop is compiled with numba and draws from components.data.random_stream (CPython's
Mersenne Twister, replayed exactly): replaying Google's tens of millions of random
calls one Python call at a time was most of the step's time. Documents come in and
instances go out as flat arrays (4 bytes a token), so a shard costs about what its
Parquet columns cost.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from numba import njit

from components.core import instances as instance_format
from components.data import random_stream as rs
from components.core.errors import BertpipeError
from components.core.masking import MaskingConfig


@dataclass(frozen=True)
class InstanceSettings:
    max_seq_length: int
    short_seq_prob: float
    dupe_factor: int
    masking: MaskingConfig
    # Store unmasked pairs (no masked positions); the training collator masks them anew each epoch.
    dynamic_masking: bool = False


@dataclass
class TokenizedDocuments:
    """Documents as flat arrays: sentence s is tokens[sentence_offsets[s]:sentence_offsets[s + 1]],
    document d is sentences document_offsets[d] to document_offsets[d + 1] - 1 (none empty)."""

    tokens: np.ndarray  # int32
    sentence_offsets: np.ndarray  # int64, one more than sentences
    document_offsets: np.ndarray  # int64, one more than documents

    @property
    def num_documents(self) -> int:
        return len(self.document_offsets) - 1

    def sentence_lengths(self) -> np.ndarray:
        return np.diff(self.sentence_offsets)


@dataclass
class InstanceStatistics:
    """Counts that add up across shards (the step turns them into fractions and means)."""

    documents: int = 0
    instances: int = 0
    tokens: int = 0
    short_target: int = 0
    random_next: int = 0
    masked: int = 0
    random: int = 0
    kept: int = 0
    length_counts: dict[int, int] = field(default_factory=dict)
    predictions_counts: dict[int, int] = field(default_factory=dict)


# Indexes into the kernel's counters.
_SHORT, _RANDOM_NEXT, _MASKED, _RANDOM, _KEPT, _INSTANCES, _TOKENS, _POSITIONS = range(8)


@njit(cache=True)
def _reserve(values, used, extra):
    """values, or a copy with room for `extra` more after `used` (amortised doubling)."""
    if used + extra <= values.shape[0]:
        return values
    bigger = np.empty(max(2 * values.shape[0], used + extra), values.dtype)
    bigger[:used] = values[:used]
    return bigger


@njit(cache=True)
def _mask(out, start, length, a_length, state, options, budget_table, is_continuation, starts, order, positions, labels):
    """Google's create_masked_lm_predictions on out[start:start + length] in place; returns the number of positions.

    Candidates are every position but [CLS] and the two [SEP]s; whole words group a
    piece with the "##" pieces after it (across the middle [SEP], as Google's code does).
    """
    whole_word, per_word, vocab_size, mask_id = options[0], options[1], options[2], options[3]
    num_candidates = length - 3
    if whole_word:
        words = 0
        for p in range(num_candidates):
            position = p + 1 if p < a_length else p + 2
            if p == 0 or not is_continuation[out[start + position]]:
                starts[words] = p
                words += 1
    else:
        words = num_candidates
        for p in range(num_candidates):
            starts[p] = p
    starts[words] = num_candidates
    for w in range(words):
        order[w] = w
    rs.shuffle(state, order, words)
    budget = budget_table[length]
    chosen = 0
    tally = np.zeros(3, np.int64)  # [MASK], random, kept
    for o in range(words):
        if chosen >= budget:
            break
        word = order[o]
        first, end = starts[word], starts[word + 1]
        if chosen + end - first > budget:
            continue  # a whole word that would overshoot the budget is skipped, not split
        choice = 0
        if per_word:
            choice = 0 if rs.random_float(state) < 0.8 else (2 if rs.random_float(state) < 0.5 else 1)
        for p in range(first, end):
            position = p + 1 if p < a_length else p + 2
            if not per_word:
                choice = 0 if rs.random_float(state) < 0.8 else (2 if rs.random_float(state) < 0.5 else 1)
            original = out[start + position]
            if choice == 0:
                out[start + position] = mask_id
            elif choice == 1:
                out[start + position] = rs.randbelow(state, vocab_size)
            tally[choice] += 1
            # insertion into the sorted (position, label) lists
            k = chosen
            while k > 0 and positions[k - 1] > position:
                positions[k] = positions[k - 1]
                labels[k] = labels[k - 1]
                k -= 1
            positions[k] = position
            labels[k] = original
            chosen += 1
    return chosen, tally[0], tally[1], tally[2]


@njit(cache=True)
def _create(tokens, sentence_offsets, document_offsets, state, max_seq_length, short_seq_prob, dupe_factor,
            dynamic_masking, options, budget_table, is_continuation, cls_id, sep_id):
    num_documents = document_offsets.shape[0] - 1
    documents = np.arange(num_documents)
    rs.shuffle(state, documents, num_documents)
    max_num_tokens = max_seq_length - 3
    counters = np.zeros(8, np.int64)
    guess = dupe_factor * (tokens.shape[0] + 4 * (sentence_offsets.shape[0] - 1)) + max_seq_length
    ids = np.empty(guess, np.int32)
    id_offsets = np.zeros(guess // 32 + 2, np.int64)
    a_lengths = np.empty(guess // 32 + 2, np.int16)
    random_next = np.empty(guess // 32 + 2, np.int8)
    mask_positions = np.empty(guess // 6 + 2, np.int16)
    mask_labels = np.empty(guess // 6 + 2, np.int32)
    mask_offsets = np.zeros(guess // 32 + 2, np.int64)
    starts = np.empty(max_seq_length + 1, np.int64)
    order = np.empty(max_seq_length + 1, np.int64)
    positions = np.empty(max_seq_length, np.int64)
    labels = np.empty(max_seq_length, np.int64)
    n = 0  # instances so far
    for _ in range(dupe_factor):
        for d in range(num_documents):
            document = documents[d]
            first_sentence = document_offsets[document]
            num_sentences = document_offsets[document + 1] - first_sentence
            target = max_num_tokens
            if rs.random_float(state) < short_seq_prob:
                target = rs.randint(state, 2, max_num_tokens)
            short = target < max_num_tokens
            chunk_start = 0
            length = 0
            i = 0
            while i < num_sentences:
                s = first_sentence + i
                length += sentence_offsets[s + 1] - sentence_offsets[s]
                if i == num_sentences - 1 or length >= target:
                    chunk = i - chunk_start + 1
                    a_end = rs.randint(state, 1, chunk - 1) if chunk >= 2 else 1
                    a_lo = sentence_offsets[first_sentence + chunk_start]
                    a_hi = sentence_offsets[first_sentence + chunk_start + a_end]
                    is_random_next = chunk == 1 or rs.random_float(state) < 0.5
                    if is_random_next:
                        target_b = target - (a_hi - a_lo)
                        other = 0
                        for _try in range(10):
                            other = rs.randint(state, 0, num_documents - 1)
                            if other != d:
                                break
                        other_document = documents[other]
                        other_first = document_offsets[other_document]
                        other_count = document_offsets[other_document + 1] - other_first
                        b_sentence = other_first + rs.randint(state, 0, other_count - 1)
                        b_lo = sentence_offsets[b_sentence]
                        b_hi = b_lo
                        while b_sentence < other_first + other_count:
                            b_hi = sentence_offsets[b_sentence + 1]
                            if b_hi - b_lo >= target_b:
                                break
                            b_sentence += 1
                        i -= chunk - a_end  # put the unused sentences back
                    else:
                        b_lo = a_hi
                        b_hi = sentence_offsets[first_sentence + i + 1]
                    # Google's truncate_seq_pair: one token at a time from the longer side, front or back at random.
                    while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
                        trim_a = (a_hi - a_lo) > (b_hi - b_lo)
                        front = rs.random_float(state) < 0.5
                        if trim_a:
                            if front:
                                a_lo += 1
                            else:
                                a_hi -= 1
                        elif front:
                            b_lo += 1
                        else:
                            b_hi -= 1
                    a_length = a_hi - a_lo
                    total = a_length + (b_hi - b_lo) + 3
                    start = id_offsets[n]
                    ids = _reserve(ids, start, total)
                    if n + 2 > id_offsets.shape[0]:
                        id_offsets = _reserve(id_offsets, n + 1, 1)
                        mask_offsets = _reserve(mask_offsets, n + 1, 1)
                        a_lengths = _reserve(a_lengths, n, 2)
                        random_next = _reserve(random_next, n, 2)
                    ids[start] = cls_id
                    ids[start + 1:start + 1 + a_length] = tokens[a_lo:a_hi]
                    ids[start + 1 + a_length] = sep_id
                    ids[start + 2 + a_length:start + total - 1] = tokens[b_lo:b_hi]
                    ids[start + total - 1] = sep_id
                    chosen = 0
                    if not dynamic_masking:
                        chosen, masked, randomized, kept = _mask(
                            ids, start, total, a_length, state, options, budget_table, is_continuation, starts, order, positions, labels
                        )
                        counters[_MASKED] += masked
                        counters[_RANDOM] += randomized
                        counters[_KEPT] += kept
                    mask_start = mask_offsets[n]
                    mask_positions = _reserve(mask_positions, mask_start, chosen)
                    mask_labels = _reserve(mask_labels, mask_start, chosen)
                    for c in range(chosen):
                        mask_positions[mask_start + c] = positions[c]
                        mask_labels[mask_start + c] = labels[c]
                    mask_offsets[n + 1] = mask_start + chosen
                    id_offsets[n + 1] = start + total
                    a_lengths[n] = a_length + 2
                    random_next[n] = 1 if is_random_next else 0
                    counters[_SHORT] += 1 if short else 0
                    counters[_RANDOM_NEXT] += 1 if is_random_next else 0
                    n += 1
                    chunk_start = i + 1
                    length = 0
                i += 1
    counters[_INSTANCES] = n
    counters[_TOKENS] = id_offsets[n]
    counters[_POSITIONS] = mask_offsets[n]
    # The final shuffle, applied by gathering into the output arrays.
    shuffled = np.arange(n)
    rs.shuffle(state, shuffled, n)
    out_ids = np.empty(id_offsets[n], np.int32)
    out_id_offsets = np.zeros(n + 1, np.int64)
    out_positions = np.empty(mask_offsets[n], np.int16)
    out_labels = np.empty(mask_offsets[n], np.int32)
    out_mask_offsets = np.zeros(n + 1, np.int64)
    out_a_lengths = np.empty(n, np.int16)
    out_random_next = np.empty(n, np.int8)
    for r in range(n):
        source = shuffled[r]
        lo, hi = id_offsets[source], id_offsets[source + 1]
        at = out_id_offsets[r]
        out_ids[at:at + hi - lo] = ids[lo:hi]
        out_id_offsets[r + 1] = at + hi - lo
        lo, hi = mask_offsets[source], mask_offsets[source + 1]
        at = out_mask_offsets[r]
        out_positions[at:at + hi - lo] = mask_positions[lo:hi]
        out_labels[at:at + hi - lo] = mask_labels[lo:hi]
        out_mask_offsets[r + 1] = at + hi - lo
        out_a_lengths[r] = a_lengths[source]
        out_random_next[r] = random_next[source]
    return out_ids, out_id_offsets, out_positions, out_labels, out_mask_offsets, out_a_lengths, out_random_next, counters


def _budget_table(config: MaskingConfig, max_seq_length: int) -> np.ndarray:
    """Google's num_to_predict for every sequence length (Python's round, half to even)."""
    return np.array(
        [min(config.max_predictions_per_seq, max(1, int(round(n * config.masked_lm_prob)))) for n in range(max_seq_length + 1)],
        dtype=np.int64,
    )


def create_instances(documents: TokenizedDocuments, seed: int, settings: InstanceSettings) -> tuple[pa.Table, InstanceStatistics]:
    """All instances of one shard (Google's order) and their statistics."""
    if documents.num_documents >= 2**32:
        raise ValueError("a shard holds at most 2**32 - 1 documents")
    config = settings.masking
    rng = random.Random(seed)
    whole_word = config.whole_word and bool(config.is_continuation)
    is_continuation = np.frombuffer(config.is_continuation, dtype=np.uint8) if config.is_continuation else np.zeros(1, np.uint8)
    options = np.array([whole_word, config.per_word_replacement, config.vocab_size, config.mask_id], dtype=np.int64)
    ids, id_offsets, positions, labels, mask_offsets, a_lengths, random_next, counters = _create(
        documents.tokens, documents.sentence_offsets, documents.document_offsets, rs.state_of(rng),
        settings.max_seq_length, settings.short_seq_prob, settings.dupe_factor, settings.dynamic_masking,
        options, _budget_table(config, settings.max_seq_length), is_continuation, config.cls_id, config.sep_id,
    )
    if len(ids) >= 2**31:
        raise BertpipeError(f"a shard made {len(ids):,} tokens of instances, more than Parquet list offsets hold; lower shard_size_mb")
    id_offsets, mask_offsets = id_offsets.astype(np.int32), mask_offsets.astype(np.int32)
    table = pa.Table.from_arrays(
        [
            pa.ListArray.from_arrays(pa.array(id_offsets), pa.array(ids)),
            pa.array(a_lengths),
            pa.ListArray.from_arrays(pa.array(mask_offsets), pa.array(positions)),
            pa.ListArray.from_arrays(pa.array(mask_offsets), pa.array(labels)),
            pa.array(random_next),
        ],
        schema=instance_format.SCHEMA,
    )
    stats = InstanceStatistics(
        documents=documents.num_documents,
        instances=int(counters[_INSTANCES]),
        tokens=int(counters[_TOKENS]),
        short_target=int(counters[_SHORT]),
        random_next=int(counters[_RANDOM_NEXT]),
        masked=int(counters[_MASKED]),
        random=int(counters[_RANDOM]),
        kept=int(counters[_KEPT]),
        length_counts=_histogram(np.diff(id_offsets)),
        predictions_counts=_histogram(np.diff(mask_offsets)) if not settings.dynamic_masking else {},
    )
    return table, stats


def load_compiled() -> None:
    """Load the compiled loop now (half a second from numba's cache, longer to compile on first use), e.g. in a
    worker process while its parent is still planning shards."""
    config = MaskingConfig(0.15, 1, 5, cls_id=2, sep_id=3, mask_id=4, is_continuation=bytes(5))
    documents = TokenizedDocuments(np.arange(4, dtype=np.int32), np.arange(5, dtype=np.int64), np.array([0, 2, 4], dtype=np.int64))
    create_instances(documents, 0, InstanceSettings(max_seq_length=8, short_seq_prob=0.1, dupe_factor=1, masking=config))


def _histogram(values: np.ndarray) -> dict[int, int]:
    counts = np.bincount(values) if len(values) else np.zeros(0, np.int64)
    return {int(k): int(counts[k]) for k in np.flatnonzero(counts)}
