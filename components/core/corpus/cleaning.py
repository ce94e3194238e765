"""Cleaning users would otherwise write themselves: NFC, whitespace, short documents, exact duplicates.

`document_units` turns one raw document into lines that each hold no newline: paragraphs
(to be sentence-split) or, with sentences='lines', the non-blank lines themselves.
`ContentHashes` remembers every kept document's hash for exact deduplication across the
whole corpus: the planning pass sees every document once, so one set there covers every
shard and pod that later makes instances.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

from components.core.corpus.settings import CorpusSettings

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_LINE_BREAK = re.compile(r"[\r\n]+")


def clean_line(line: str, settings: CorpusSettings) -> str:
    """One line or paragraph: NFC, whitespace runs to one space (or just newlines to spaces), stripped."""
    if settings.normalize_unicode:
        line = unicodedata.normalize("NFC", line)
    if settings.normalize_whitespace:
        return " ".join(line.split())
    return _LINE_BREAK.sub(" ", line).strip()


def document_units(text: str, settings: CorpusSettings) -> list[str]:
    """The non-empty paragraphs (sentences='split': blank lines separate them) or lines (sentences='lines') of a document."""
    units = text.splitlines() if settings.sentences == "lines" else _PARAGRAPH_BREAK.split(text)
    return [cleaned for cleaned in (clean_line(unit, settings) for unit in units) if cleaned]


def content_hash(units: list[str]) -> int:
    """64 bits of BLAKE2b over the document's cleaned text (two documents that differ only in what cleaning removed collide, on purpose)."""
    return int.from_bytes(hashlib.blake2b("\n".join(units).encode("utf-8"), digest_size=8).digest(), "little")


class ContentHashes:
    """A set of 64-bit hashes in under 20 MB per million documents (a Python set of them: 66 MB).

    Hashes live in one sorted uint64 array (8 bytes each) plus a Python set of recent ones
    (at most an eighth as many, ~75 bytes each), merged into the array when it fills, so
    merging costs O(log n) amortized per document (a merge briefly holds two more copies of
    the array) and a lookup is one set probe plus one binary search. Measured: 1 million
    documents, 7.6 + 3.9 bytes each at the end.
    A false duplicate needs two different documents with equal 64-bit hashes: about
    n^2 / 2^65, i.e. 1 in 370,000 for 10 million documents.
    """

    def __init__(self, min_pending: int = 1 << 16):
        self.sorted = np.zeros(0, np.uint64)
        self.pending: set[int] = set()
        self.min_pending = min_pending

    def __len__(self) -> int:
        return len(self.sorted) + len(self.pending)

    def add(self, value: int) -> bool:
        """Record `value`; False if it was there already."""
        if value in self.pending:
            return False
        key = np.uint64(value)  # a plain int above 2**63 would make numpy convert the whole array per lookup
        position = int(self.sorted.searchsorted(key))
        if position < len(self.sorted) and self.sorted[position] == key:
            return False
        self.pending.add(value)
        if len(self.pending) >= max(self.min_pending, len(self.sorted) // 8):
            self._merge()
        return True

    def _merge(self) -> None:
        fresh = np.fromiter(self.pending, np.uint64, len(self.pending))
        self.sorted = np.sort(np.concatenate([self.sorted, fresh]), kind="stable")
        self.pending = set()
