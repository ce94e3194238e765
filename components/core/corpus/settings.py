"""How a corpus is read and cleaned (CorpusSettings), and what reading it counted (CorpusCounts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from components.core.settings import setting

FORMATS = ("auto", "text", "documents", "jsonl", "parquet", "csv", "tsv", "hf")


@dataclass(frozen=True)
class CorpusSettings:
    """Read by export-vocab (with --corpus) and by create-pretraining-data; recorded in the data manifest.

    "Cleaning on by default" means on for raw documents (every format but `text`). Text already
    in Google's format (`text`: one sentence per line, a blank line between documents) is read
    exactly as Google's script reads it, so its data stays byte-identical to the reference,
    unless `clean_text_format` asks for the same cleaning there too. It is never re-split.
    """

    corpus_format: str = setting(
        "auto", "how to read --corpus: text (one sentence per line, blank line between documents; Google's format), "
        "documents (one document per .txt/.md file), jsonl, parquet, csv, tsv, hf (a Hugging Face dataset saved with "
        "save_to_disk); 'auto' goes by the file extensions (.txt and unknown: text, .md: documents)", choices=FORMATS)
    text_column: str = setting("text", "the column (field) holding each document's text in jsonl, parquet, csv, tsv and hf corpora")
    sentences: str = setting(
        "split", "how raw documents become sentences: 'split' runs the sentence segmenter (nupunkt) on each paragraph, "
        "'lines' takes each non-blank line as a sentence (text already split); the text format is always read as lines",
        choices=("split", "lines"))
    normalize_unicode: bool = setting(True, "Unicode NFC normalization of raw documents")
    normalize_whitespace: bool = setting(True, "collapse runs of whitespace (tabs, no-break spaces, ...) to one space and strip each line")
    min_document_chars: int = setting(50, "drop documents with fewer characters than this (after normalization; 0 keeps all but empty ones)", minimum=0)
    dedup: bool = setting(True, "drop documents whose text repeats an earlier one exactly (a content hash over the whole corpus)")
    clean_text_format: bool = setting(False, "apply the cleaning above to corpora in the text format too (off: read as Google's script reads them)")
    skip_bad_records: bool = setting(False, "skip and count bad records (a line that is not JSON, a non-text value, a binary file) instead of stopping with an error")


@dataclass
class CorpusCounts:
    """What one pass over the corpus saw: the data card and MLflow show these."""

    files: int = 0
    records: int = 0              # documents read, before cleaning
    bad_records: int = 0          # skipped with --skip-bad-records (bad lines, rows, values)
    bad_files: int = 0            # skipped with --skip-bad-records (binary or undecodable files)
    empty: int = 0                # dropped: nothing left after normalization
    short: int = 0                # dropped: under min_document_chars
    duplicates: int = 0           # dropped: same text as an earlier document
    documents: int = 0            # kept
    sentences: int = 0            # in the kept documents (0 until they are split, when splitting is deferred)

    def as_dict(self) -> dict:
        return asdict(self)

    def add(self, other: dict) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + int(other.get(f.name, 0)))

    def describe(self) -> str:
        """One log line: what was read, kept and dropped."""
        skipped = f", skipped {self.bad_records} bad records and {self.bad_files} bad files" if self.bad_records or self.bad_files else ""
        return (f"{self.records:,} documents read from {self.files:,} files, {self.documents:,} kept; dropped {self.empty:,} empty, "
                f"{self.short:,} short, {self.duplicates:,} duplicates{skipped}")

    def summary(self) -> dict:
        """The counts plus the mean number of sentences per kept document."""
        return {**self.as_dict(), "mean_sentences_per_document": self.sentences / self.documents if self.documents else 0.0}
