"""Read a corpus, whatever form it comes in, as documents that are lists of sentences.

`iter_documents(spec, settings)` is the one door both export-vocab and create-pretraining-data
use. Formats (CorpusSettings.corpus_format): Google's text format (one sentence per line, a
blank line between documents; read exactly as Google's script does, never re-split), one
document per .txt/.md file, JSONL, Parquet, CSV, TSV and Hugging Face datasets saved with
save_to_disk; local or s3://, compressed or not. Raw documents are cleaned
(components.core.corpus.cleaning) and sentence-split (components.core.corpus.segmentation).
Everything streams: memory holds one file's batch and the dedup hashes, not the corpus.
"""

from __future__ import annotations

from typing import Iterator

from components.core.corpus.cleaning import ContentHashes, clean_line, content_hash, document_units
from components.core.corpus.files import DEMO_CORPUS, corpus_format, demo_corpus_path, is_hf_dataset, resolve_corpus_files
from components.core.corpus.readers import Strictness, hf_records, jsonl_records, parquet_records, table_records, text_documents, whole_file
from components.core.corpus.segmentation import split_sentences
from components.core.corpus.settings import CorpusCounts, CorpusSettings
from components.core.errors import BertpipeError

__all__ = ["DEMO_CORPUS", "Corpus", "CorpusCounts", "CorpusSettings", "demo_corpus_path", "iter_documents", "resolve_corpus_files", "split_sentences"]


class Corpus:
    """One pass over a corpus; `counts` fills in as `documents()` is consumed."""

    def __init__(self, spec: str, settings: CorpusSettings = CorpusSettings()):
        self.spec, self.settings = spec, settings
        self.counts = CorpusCounts()
        requested = settings.corpus_format
        if requested == "hf" or (requested == "auto" and is_hf_dataset(spec)):
            if not is_hf_dataset(spec):
                raise BertpipeError(f"corpus {spec} is not a dataset saved with save_to_disk (no {' or '.join(('dataset_dict.json', 'state.json'))})")
            self.files, self.format = [spec], "hf"
        else:
            self.files = resolve_corpus_files(spec)
            self.format = corpus_format(spec, self.files, requested)

    @property
    def is_raw(self) -> bool:
        """Raw documents (cleaned, maybe sentence-split), as opposed to Google's format read as it is."""
        return self.format != "text"

    @property
    def document_unit(self) -> str:
        """What makes one document in this corpus's format, for messages about too few documents."""
        return {"text": "documents are separated by blank lines", "documents": "one document per file"}.get(
            self.format, f"one document per {self.format} record")

    @property
    def needs_splitting(self) -> bool:
        """Whether its documents are paragraphs that still need the sentence segmenter."""
        return self.is_raw and self.settings.sentences == "split"

    def documents(self, split: bool = True) -> Iterator[list[str]]:
        """Kept documents as lists of sentences; with split=False, raw paragraphs where `needs_splitting`
        (the data step splits them in its shard workers, in parallel) and sentences are not counted."""
        strict = Strictness(self.settings.skip_bad_records, self.counts)
        cleaning = self.is_raw or self.settings.clean_text_format
        hashes = ContentHashes() if cleaning and self.settings.dedup else None
        for units in self._units(strict):
            self.counts.records += 1
            if cleaning and not self._keep(units, hashes):
                continue
            if split and self.needs_splitting:
                units = split_sentences(units)
            self.counts.documents += 1
            self.counts.sentences += len(units) if split or not self.needs_splitting else 0
            yield units

    def _keep(self, units: list[str], hashes: ContentHashes | None) -> bool:
        if not units:
            self.counts.empty += 1
            return False
        if sum(map(len, units)) < self.settings.min_document_chars:
            self.counts.short += 1
            return False
        if hashes is not None and not hashes.add(content_hash(units)):
            self.counts.duplicates += 1
            return False
        return True

    def _units(self, strict: Strictness) -> Iterator[list[str]]:
        """Each record's lines (text format) or cleaned paragraphs/lines (raw formats), file by file."""
        settings = self.settings
        for uri in self.files:
            self.counts.files += 1
            if self.format == "text":
                for lines in text_documents(uri, strict):
                    yield [clean_line(line, settings) for line in lines] if settings.clean_text_format else lines
                continue
            for text in self._records(uri, strict):
                yield document_units(text or "", settings)

    def _records(self, uri: str, strict: Strictness) -> Iterator[str | None]:
        column = self.settings.text_column
        if self.format == "documents":
            return whole_file(uri, strict)
        if self.format == "jsonl":
            return jsonl_records(uri, column, strict)
        if self.format in ("csv", "tsv"):
            return table_records(uri, column, "," if self.format == "csv" else "\t", strict)
        if self.format == "parquet":
            return parquet_records(uri, column, strict)
        return hf_records(uri, column)


def iter_documents(spec: str, settings: CorpusSettings = CorpusSettings(), counts: CorpusCounts | None = None) -> Iterator[list[str]]:
    """The documents of a corpus as lists of sentences; `counts`, if given, gets what the pass counted."""
    corpus = Corpus(spec, settings)
    if counts is not None:
        corpus.counts = counts
    return corpus.documents()
