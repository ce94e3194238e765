"""Google's create_pretraining_data algorithm on token ids, for one set of documents (one shard).

Same steps and the same `random.Random` calls in the same order as Google's
create_training_instances: shuffle the documents; `dupe_factor` passes over them; per
document a target length (short with probability short_seq_prob); chunks of whole
sentences up to the target; a random split point into A and B; B is "random next"
(from another document, unused sentences put back) half of the time or when the chunk
has one sentence; truncation of the longer side from the front or back at random;
masking (components.masking); a final shuffle of the instances. Given the same
documents and seed, the instances equal Google's.

Instances are held in flat arrays (4 bytes a token), not Python lists, so a shard of
instances costs about what its Parquet columns cost.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from components import instances as instance_format
from components.masking import MaskCounts, MaskingConfig, mask_tokens, shuffle_exact

Document = list[array]  # sentences of token ids (array('i'): 4 bytes a token)


@dataclass(frozen=True)
class InstanceSettings:
    max_seq_length: int
    short_seq_prob: float
    dupe_factor: int
    masking: MaskingConfig
    # Store unmasked pairs (no masked positions); the training collator masks them anew each epoch.
    dynamic_masking: bool = False


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


class InstanceBuffer:
    """Instances in columnar flat arrays, turned into one Arrow table in any order."""

    def __init__(self):
        self.input_ids = array("i")
        self.input_offsets = array("q", [0])
        self.segment_a_length = array("h")
        self.positions = array("h")
        self.labels = array("i")
        self.mask_offsets = array("q", [0])
        self.next_sentence_label = array("b")

    def __len__(self) -> int:
        return len(self.segment_a_length)

    def add(self, tokens: list[int], segment_a_length: int, positions: list[int], labels: list[int], is_random_next: bool) -> None:
        self.input_ids.extend(tokens)
        self.input_offsets.append(len(self.input_ids))
        self.segment_a_length.append(segment_a_length)
        self.positions.extend(positions)
        self.labels.extend(labels)
        self.mask_offsets.append(len(self.positions))
        self.next_sentence_label.append(1 if is_random_next else 0)

    def to_table(self, order: list[int]) -> pa.Table:
        def column(values: array, value_type) -> pa.Array:
            return pa.array(np.frombuffer(values, dtype=values.typecode), value_type)

        def lists(offsets: array, values: array, value_type) -> pa.Array:
            return pa.ListArray.from_arrays(column(offsets, pa.int32()), column(values, value_type))

        table = pa.Table.from_arrays(
            [
                lists(self.input_offsets, self.input_ids, pa.int32()),
                column(self.segment_a_length, pa.int16()),
                lists(self.mask_offsets, self.positions, pa.int16()),
                lists(self.mask_offsets, self.labels, pa.int32()),
                column(self.next_sentence_label, pa.int8()),
            ],
            schema=instance_format.SCHEMA,
        )
        return table.take(pa.array(order, pa.int64()))


def _truncate_pair(a: list[int], b: list[int], max_num_tokens: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """Google's truncate_seq_pair: drop one token at a time from the longer side (front or back at random)."""
    a_lo, a_hi, b_lo, b_hi = 0, len(a), 0, len(b)
    while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
        trim_a = (a_hi - a_lo) > (b_hi - b_lo)
        from_front = rng.random() < 0.5
        if trim_a:
            a_lo, a_hi = (a_lo + 1, a_hi) if from_front else (a_lo, a_hi - 1)
        else:
            b_lo, b_hi = (b_lo + 1, b_hi) if from_front else (b_lo, b_hi - 1)
    return a[a_lo:a_hi], b[b_lo:b_hi]


class _ShardBuilder:
    def __init__(self, documents: list[Document], rng: random.Random, settings: InstanceSettings):
        self.documents = documents
        self.rng = rng
        self.settings = settings
        self.buffer = InstanceBuffer()
        self.stats = InstanceStatistics(documents=len(documents))
        self.mask_counts = MaskCounts()

    def emit(self, a: list[int], b: list[int], is_random_next: bool, short: bool) -> None:
        config = self.settings.masking
        tokens = [config.cls_id, *a, config.sep_id, *b, config.sep_id]
        if self.settings.dynamic_masking:
            masked, positions, labels = tokens, [], []
        else:
            masked, positions, labels = mask_tokens(tokens, self.rng, config, self.mask_counts, segment_a_length=len(a) + 2)
        self.buffer.add(masked, len(a) + 2, positions, labels, is_random_next)
        stats = self.stats
        stats.tokens += len(tokens)
        stats.length_counts[len(tokens)] = stats.length_counts.get(len(tokens), 0) + 1
        stats.short_target += short
        stats.random_next += is_random_next

    def from_document(self, document_index: int) -> None:
        rng = self.rng
        document = self.documents[document_index]
        max_num_tokens = self.settings.max_seq_length - 3
        target = max_num_tokens
        if rng.random() < self.settings.short_seq_prob:
            target = rng.randint(2, max_num_tokens)
        short = target < max_num_tokens
        chunk: list[list[int]] = []
        length = 0
        i = 0
        while i < len(document):
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [token for sentence in chunk[:a_end] for token in sentence]
                b: list[int] = []
                is_random_next = len(chunk) == 1 or rng.random() < 0.5
                if is_random_next:
                    b = self._random_next(document_index, target - len(a))
                    i -= len(chunk) - a_end  # put the unused sentences back
                else:
                    b = [token for sentence in chunk[a_end:] for token in sentence]
                a, b = _truncate_pair(a, b, max_num_tokens, rng)
                self.emit(a, b, is_random_next, short)
                chunk = []
                length = 0
            i += 1

    def _random_next(self, document_index: int, target_b_length: int) -> list[int]:
        rng = self.rng
        for _ in range(10):
            other = rng.randint(0, len(self.documents) - 1)
            if other != document_index:
                break
        document = self.documents[other]
        b: list[int] = []
        for sentence in document[rng.randint(0, len(document) - 1):]:
            b.extend(sentence)
            if len(b) >= target_b_length:
                break
        return b


def create_instances(documents: list[Document], seed: int, settings: InstanceSettings) -> tuple[pa.Table, InstanceStatistics]:
    """All instances of one shard (Google's order) and their statistics; `documents` is shuffled in place."""
    rng = random.Random(seed)
    shuffle_exact(documents, rng)
    builder = _ShardBuilder(documents, rng, settings)
    for _ in range(settings.dupe_factor):
        for document_index in range(len(documents)):
            builder.from_document(document_index)
    order = list(range(len(builder.buffer)))
    shuffle_exact(order, rng)
    stats = builder.stats
    stats.instances = len(order)
    counts = builder.mask_counts
    stats.masked, stats.random, stats.kept = counts.masked, counts.random, counts.kept
    for n in counts.per_instance:
        stats.predictions_counts[n] = stats.predictions_counts.get(n, 0) + 1
    return builder.buffer.to_table(order), stats
