"""One reader per corpus format, each streaming one file (or one saved dataset) at a time.

`text_documents` yields documents as lists of lines (Google's format, read as Google's script
reads it); the other readers yield each record's raw text (None for a null value). Bad input
goes through `Strictness`: a one-line error naming the file and line or row, or, with
--skip-bad-records, a counted skip.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from components.core import storage
from components.core.corpus.files import looks_binary, open_stream, read_errors
from components.core.corpus.settings import CorpusCounts
from components.core.errors import BertpipeError

log = logging.getLogger(__name__)
_BATCH_ROWS = 1024
_WARN_SKIPS = 5


class Strictness:
    """Stop on bad input with a clear error, or skip it and count it (--skip-bad-records)."""

    def __init__(self, skip: bool, counts: CorpusCounts):
        self.skip, self.counts = skip, counts

    def bad_record(self, message: str) -> None:
        if not self.skip:
            raise BertpipeError(f"{message}; fix it or pass --skip-bad-records to skip such records")
        self.counts.bad_records += 1
        if self.counts.bad_records <= _WARN_SKIPS:
            log.warning("skipped: %s", message)

    def bad_file(self, message: str) -> None:
        if not self.skip:
            raise BertpipeError(f"{message}; remove it from the corpus or pass --skip-bad-records to skip such files")
        self.counts.bad_files += 1
        log.warning("skipped: %s", message)


def _lines(uri: str, strict: Strictness) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) of a text file; a binary file or a line that is not UTF-8 is bad input."""
    with read_errors(uri), open_stream(uri) as stream:
        if looks_binary(stream):
            strict.bad_file(f"{uri} is not text (it holds NUL bytes)")
            return
        for number, raw in enumerate(stream, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                strict.bad_record(f"{uri}: line {number} is not valid UTF-8 ({error.reason}); re-encode the corpus as UTF-8")


def text_documents(uri: str, strict: Strictness) -> Iterator[list[str]]:
    """Google's format: stripped non-empty lines; a blank line or the end of the file ends a document."""
    document: list[str] = []
    for _, line in _lines(uri, strict):
        line = line.strip()
        if line:
            document.append(line)
        elif document:
            yield document
            document = []
    if document:
        yield document


def whole_file(uri: str, strict: Strictness) -> Iterator[str]:
    """One document per file (.txt, .md)."""
    with read_errors(uri), open_stream(uri) as stream:
        if looks_binary(stream):
            strict.bad_file(f"{uri} is not text (it holds NUL bytes)")
            return
        data = stream.read()
    try:
        yield data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        strict.bad_file(f"{uri}: line {line} is not valid UTF-8 ({error.reason}); re-encode the corpus as UTF-8")


def _kind(value) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def jsonl_records(uri: str, column: str, strict: Strictness) -> Iterator[str | None]:
    """JSON Lines: one object per line with the text in `column`; blank lines are ignored."""
    for number, line in _lines(uri, strict):
        if not line.strip():
            continue
        where = f"{uri}: line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == 1 and line.lstrip().startswith("["):
                raise BertpipeError(f"{uri} is one JSON array, not JSON Lines (one object per line); convert it, e.g. jq -c '.[]'") from error
            strict.bad_record(f"{where} is not JSON ({error.msg})")
            continue
        if number == 1 and isinstance(record, list):
            raise BertpipeError(f"{uri} is one JSON array, not JSON Lines (one object per line); convert it, e.g. jq -c '.[]'")
        if not isinstance(record, dict):
            strict.bad_record(f"{where} is {_kind(record)}, not a JSON object with a '{column}' field")
        elif column not in record:
            fields = ", ".join(sorted(record)[:10]) or "none"
            strict.bad_record(f"{where} has no '{column}' field (fields: {fields}); set --text-column")
        elif record[column] is not None and not isinstance(record[column], str):
            strict.bad_record(f"{where}: '{column}' is {_kind(record[column])}, not text")
        else:
            yield record[column]


def table_records(uri: str, column: str, delimiter: str, strict: Strictness) -> Iterator[str | None]:
    """CSV or TSV with a header row; the text is in `column`."""
    import io

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # documents are longer than csv's 128 KiB default
    with read_errors(uri), open_stream(uri) as stream:
        if looks_binary(stream):
            strict.bad_file(f"{uri} is not text (it holds NUL bytes)")
            return
        reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8", newline=""), delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                return
            if column not in header:
                raise BertpipeError(f"{uri}: no '{column}' column in the header (columns: {', '.join(header[:10])}); set --text-column")
            position = header.index(column)
            for row in reader:
                if len(row) != len(header):
                    strict.bad_record(f"{uri}: line {reader.line_num} has {len(row)} fields, the header {len(header)}")
                    continue
                yield row[position]
        except UnicodeDecodeError as error:
            raise BertpipeError(f"{uri}: near line {reader.line_num + 1} is not valid UTF-8 ({error.reason}); re-encode the corpus as UTF-8") from error
        except csv.Error as error:
            raise BertpipeError(f"{uri}: line {reader.line_num} is not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({error})") from error


@contextlib.contextmanager
def _local_copy(uri: str) -> Iterator[str]:
    """A local path for a file that must be read with seeks (Parquet): the file itself, or an S3 object copied to disk."""
    if not storage.is_s3(uri):
        yield uri
        return
    with tempfile.NamedTemporaryFile(prefix="bertpipe-corpus-", suffix=Path(uri).suffix) as copy:
        with storage.open_read(uri) as body:
            shutil.copyfileobj(body, copy, 1 << 20)
        copy.flush()
        yield copy.name


def _check_text_type(where: str, column: str, kind) -> None:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        raise BertpipeError(f"{where}: column '{column}' holds {kind}, not text; set --text-column to a text column")


def parquet_records(uri: str, column: str, strict: Strictness) -> Iterator[str | None]:
    """Parquet, read in batches of rows (one column only)."""
    import pyarrow.parquet as pq

    with _local_copy(uri) as path:
        try:
            handle = pq.ParquetFile(path)
        except Exception as error:  # pyarrow raises ArrowInvalid and friends for a file that is not Parquet
            strict.bad_file(f"{uri} is not a Parquet file ({error})")
            return
        names = handle.schema_arrow.names
        if column not in names:
            raise BertpipeError(f"{uri}: no '{column}' column (columns: {', '.join(names[:10])}); set --text-column")
        _check_text_type(uri, column, handle.schema_arrow.field(column).type)
        for batch in handle.iter_batches(batch_size=_BATCH_ROWS, columns=[column]):
            yield from batch.column(0).to_pylist()


def hf_records(spec: str, column: str) -> Iterator[str | None]:
    """A Hugging Face dataset saved with save_to_disk (every split of a DatasetDict, in name order), memory-mapped."""
    import datasets

    with storage.local_dir(spec, verify=False) as folder:
        try:
            loaded = datasets.load_from_disk(str(folder))
        except IndexError as error:  # datasets fails this way on a dataset saved with no rows
            raise BertpipeError(f"dataset {spec} holds no rows") from error
        except (FileNotFoundError, ValueError) as error:
            raise BertpipeError(f"{spec}: not a dataset saved with save_to_disk ({error})") from error
        parts = [(name, loaded[name]) for name in sorted(loaded)] if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
        if sum(len(part) for _, part in parts) == 0:
            raise BertpipeError(f"dataset {spec} holds no rows")
        for name, part in parts:
            where = f"{spec}" + (f" (split {name})" if name else "")
            if column not in part.column_names:
                raise BertpipeError(f"{where}: no '{column}' column (columns: {', '.join(part.column_names[:10])}); set --text-column")
            _check_text_type(where, column, part.data.schema.field(column).type)
            for batch in part.select_columns([column]).iter(batch_size=_BATCH_ROWS):
                yield from batch[column]
