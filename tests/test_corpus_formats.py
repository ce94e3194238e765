"""Every corpus format gives the same documents; cleaning, dedup and counts; bad input names the file and line."""

from __future__ import annotations

import csv
import gzip
import json
import unicodedata
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.core import storage
from components.core.corpus import Corpus, CorpusSettings, iter_documents
from components.core.corpus.cleaning import ContentHashes
from components.core.errors import BertpipeError

RAW = [
    "The king is dead. Long live the king!\n\nMr. Smith rode to the castle at 5 p.m. on Monday. The gates were open.",
    "In the beginning was the word.  And the word was\nwith God, as Dr. Watson said.",
    "A hacker enjoys exploring the details of programmable systems. Is that so? Yes, it is.",
]
SENTENCES = [
    ["The king is dead.", "Long live the king!", "Mr. Smith rode to the castle at 5 p.m. on Monday.", "The gates were open."],
    ["In the beginning was the word.", "And the word was with God, as Dr. Watson said."],
    ["A hacker enjoys exploring the details of programmable systems.", "Is that so?", "Yes, it is."],
]


def _jsonl(path, texts, column="text", opener=open):
    with opener(path, "wt", encoding="utf-8") as handle:
        for number, text in enumerate(texts):
            handle.write(json.dumps({"id": number, column: text}) + "\n")
    return str(path)


def _table(path, texts, delimiter):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(["id", "text"])
        writer.writerows([number, text] for number, text in enumerate(texts))
    return str(path)


def _files(folder, texts, suffix):
    folder.mkdir()
    for number, text in enumerate(texts):
        (folder / f"doc-{number}{suffix}").write_text(text, encoding="utf-8")
    return str(folder)


def _hf(path, texts, dict_=False):
    import datasets

    dataset = datasets.Dataset.from_dict({"text": texts, "id": list(range(len(texts)))})
    if dict_:  # splits come in name order: "a" before "b"
        dataset = datasets.DatasetDict({"b": dataset.select(range(2, len(texts))), "a": dataset.select(range(2))})
    dataset.save_to_disk(str(path))
    return str(path)


WRITERS = {
    "jsonl": lambda tmp: _jsonl(tmp / "c.jsonl", RAW),
    "jsonl.gz": lambda tmp: _jsonl(tmp / "c.jsonl.gz", RAW, opener=gzip.open),
    "parquet": lambda tmp: (pq.write_table(pa.table({"text": RAW}), tmp / "c.parquet", row_group_size=2), str(tmp / "c.parquet"))[1],
    "csv": lambda tmp: _table(tmp / "c.csv", RAW, ","),
    "tsv.gz": lambda tmp: (_table(tmp / "c.tsv", RAW, "\t"), (tmp / "c.tsv.gz").write_bytes(gzip.compress((tmp / "c.tsv").read_bytes())),
                           (tmp / "c.tsv").unlink(), str(tmp / "c.tsv.gz"))[-1],
    "md folder": lambda tmp: _files(tmp / "docs", RAW, ".md"),
    "md glob": lambda tmp: _files(tmp / "docs", RAW, ".md") + "/*.md",
    "hf": lambda tmp: _hf(tmp / "ds", RAW),
    "hf dict": lambda tmp: _hf(tmp / "ds", RAW, dict_=True),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_every_format_gives_the_same_sentence_split_documents(tmp_path, kind):
    corpus = Corpus(WRITERS[kind](tmp_path))
    assert list(corpus.documents()) == SENTENCES
    assert corpus.counts.documents == 3 and corpus.counts.sentences == 9 and corpus.counts.records == 3


def test_txt_files_are_one_document_each_only_when_asked(tmp_path):
    folder = _files(tmp_path / "docs", RAW, ".txt")
    assert list(iter_documents(folder, CorpusSettings(corpus_format="documents"))) == SENTENCES
    # .txt is Google's format by default (as before): each line a sentence, blank lines end documents.
    assert list(iter_documents(folder))[:2] == [["The king is dead. Long live the king!"], ["Mr. Smith rode to the castle at 5 p.m. on Monday. The gates were open."]]


def test_text_already_split_is_taken_line_by_line(tmp_path):
    corpus = _jsonl(tmp_path / "c.jsonl", ["First line. Still the first.\nSecond line here, yes.\n\nThird line."])
    assert list(iter_documents(corpus, CorpusSettings(sentences="lines"))) == [["First line. Still the first.", "Second line here, yes.", "Third line."]]


def test_cleaning_counts_and_each_switch(tmp_path):
    decomposed = unicodedata.normalize("NFD", "Café au lait, s'il vous plaît, with\u00a0extra\tspace and more words.")
    texts = [decomposed, RAW[0], "", None, "Too short.", RAW[0], "  \n \n ", RAW[2]]
    path = tmp_path / "c.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"text": text}) + "\n" for text in texts)
    corpus = Corpus(str(path))
    documents = list(corpus.documents())
    assert documents[0] == [unicodedata.normalize("NFC", "Café au lait, s'il vous plaît, with extra space and more words.")]
    assert documents[1:] == [SENTENCES[0], SENTENCES[2]]
    assert corpus.counts.as_dict() == {"files": 1, "records": 8, "bad_records": 0, "bad_files": 0, "empty": 3, "short": 1,
                                       "duplicates": 1, "documents": 3, "sentences": 8}
    assert corpus.counts.summary()["mean_sentences_per_document"] == pytest.approx(8 / 3)

    loose = Corpus(str(path), CorpusSettings(normalize_unicode=False, normalize_whitespace=False, min_document_chars=0, dedup=False))
    documents = list(loose.documents())
    assert documents[0] == [decomposed.replace("\n", " ")] and len(documents) == 5
    assert (loose.counts.empty, loose.counts.short, loose.counts.duplicates) == (3, 0, 0)


def test_duplicates_are_found_across_files(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    _jsonl(folder / "a.jsonl", RAW[:2])
    _jsonl(folder / "b.jsonl.gz", [RAW[1], RAW[2], RAW[0].replace(" ", "  ")], opener=gzip.open)
    corpus = Corpus(str(folder))
    assert list(corpus.documents()) == SENTENCES
    assert corpus.counts.duplicates == 2  # the second differs from the first only in whitespace


def test_google_format_is_read_as_it_is_unless_asked(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("Short.\n\nSame doc.\nTwo  lines.\n\nSame doc.\nTwo  lines.\n", encoding="utf-8")
    corpus = Corpus(str(path))
    assert list(corpus.documents()) == [["Short."], ["Same doc.", "Two  lines."], ["Same doc.", "Two  lines."]]
    assert (corpus.counts.duplicates, corpus.counts.short, corpus.counts.sentences) == (0, 0, 5)
    cleaned = Corpus(str(path), CorpusSettings(clean_text_format=True, min_document_chars=8))
    assert list(cleaned.documents()) == [["Same doc.", "Two lines."]]
    assert (cleaned.counts.duplicates, cleaned.counts.short) == (1, 1)


def _error(spec, **settings) -> str:
    with pytest.raises(BertpipeError) as caught:
        list(iter_documents(spec, CorpusSettings(**settings)))
    return str(caught.value)


def test_bad_jsonl_lines_name_the_file_and_line_or_are_counted(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "' + RAW[2] + '"}\n{"text": "broken\n{"body": "x"}\n{"text": 7}\n[1]\n', encoding="utf-8")
    assert _error(str(path)).startswith(f"{path}: line 2 is not JSON (")
    corpus = Corpus(str(path), CorpusSettings(skip_bad_records=True))
    assert list(corpus.documents()) == [SENTENCES[2]]
    assert corpus.counts.bad_records == 4
    lines = path.read_text().splitlines()
    for line, message in ((3, "line 3 has no 'text' field (fields: body); set --text-column"), (4, "line 4: 'text' is a number, not text"),
                          (5, "line 5 is a list, not a JSON object")):
        single = tmp_path / f"bad-{line}.jsonl"
        single.write_text('{"text": "ok"}\n' * (line - 1) + lines[line - 1] + "\n", encoding="utf-8")
        assert _error(str(single)).startswith(f"{single}: {message}")


def test_schema_errors_are_errors_even_when_skipping(tmp_path):
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    assert "column 'text' holds int64, not text" in _error(str(tmp_path / "ints.parquet"), skip_bad_records=True)
    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "body.parquet")
    assert "no 'text' column (columns: body); set --text-column" in _error(str(tmp_path / "body.parquet"))
    _table(tmp_path / "c.csv", RAW, ",")
    assert "no 'body' column in the header (columns: id, text)" in _error(str(tmp_path / "c.csv"), text_column="body")
    (tmp_path / "array.json").write_text('[{"text": "a"}]\n')
    assert "is one JSON array, not JSON Lines" in _error(str(tmp_path / "array.json"))


def test_empty_dataset_mixed_folder_binary_and_wrong_format(tmp_path):
    assert _error(_hf(tmp_path / "empty", [])) == f"dataset {tmp_path / 'empty'} holds no rows"
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _jsonl(mixed / "a.jsonl", RAW)
    (mixed / "README.md").write_text("about")
    assert _error(str(mixed)) == f"corpus {mixed} mixes formats: README.md (documents), a.jsonl (jsonl); keep one kind of file per corpus or pass --corpus-format"
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "a.txt").write_text("One sentence.\n")
    (binary / "b.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    assert _error(str(binary)).startswith(f"{binary / 'b.txt'} is not text (it holds NUL bytes); remove it")
    corpus = Corpus(str(binary), CorpusSettings(skip_bad_records=True))
    assert list(corpus.documents()) == [["One sentence."]] and corpus.counts.bad_files == 1
    assert "is not a dataset saved with save_to_disk" in _error(str(binary), corpus_format="hf")


def test_content_hashes_match_a_set_and_stay_small():
    rng = np.random.default_rng(0)
    values = [int(v) for v in rng.integers(0, 2**64, 60_000, dtype=np.uint64)]
    values += values[:5000] + [2**64 - 1, 0, 2**64 - 1]
    hashes, reference = ContentHashes(min_pending=1000), set()
    for value in values:
        assert hashes.add(value) == (value not in reference)
        reference.add(value)
    assert len(hashes) == len(reference)
    assert hashes.sorted.nbytes <= 8 * len(reference) and len(hashes.pending) <= len(reference) // 8


def test_s3_jsonl_and_parquet(servers_env, tmp_path):
    prefix = f"s3://{servers_env.bucket}/test-corpus/{uuid.uuid4().hex[:8]}"
    storage.write_bytes(storage.join(prefix, "jsonl", "c.jsonl.gz"), gzip.compress(open(_jsonl(tmp_path / "c.jsonl", RAW), "rb").read()))
    storage.write_bytes(storage.join(prefix, "plain", "c.jsonl"), (tmp_path / "c.jsonl").read_bytes())
    pq.write_table(pa.table({"text": RAW}), tmp_path / "c.parquet")
    storage.write_bytes(storage.join(prefix, "parquet", "c.parquet"), (tmp_path / "c.parquet").read_bytes())
    for folder in ("jsonl", "plain", "parquet"):
        assert list(iter_documents(storage.join(prefix, folder))) == SENTENCES
