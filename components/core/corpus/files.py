"""Which files a corpus spec names, which format they are in, and their bytes as a decompressed stream.

A spec is a file, a folder, a glob (``data/*.jsonl.gz``) or an s3:// prefix; files are taken
in sorted order, so the document order is reproducible. .gz, .bz2, .xz and .zst files are
decompressed on the fly.
"""

from __future__ import annotations

import bz2
import contextlib
import glob
import gzip
import io
import lzma
import zlib
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import IO, Iterator

from components.core import storage
from components.core.errors import BertpipeError

DEMO_CORPUS = "demo"
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
_EXTENSIONS = {
    ".txt": "text", ".text": "text", ".md": "documents", ".markdown": "documents",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv",
}
HF_MARKERS = ("dataset_dict.json", "state.json")


def demo_corpus_path() -> str:
    """The bundled public-domain demo corpus (a slice of shared/data/pd-corpus.txt.gz)."""
    return str(resources.files("components") / "demo_data" / "pd-demo-corpus.txt.gz")


def resolve_corpus_files(spec: str) -> list[str]:
    """Expand a corpus spec into a sorted list of files; fails if it names nothing."""
    if spec == DEMO_CORPUS:
        return [demo_corpus_path()]
    if storage.is_s3(spec):
        files = storage.list_files(spec)
    elif any(ch in spec for ch in "*?["):
        files = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    elif Path(spec).is_dir():
        files = storage.list_files(spec)
    elif Path(spec).is_file():
        files = [spec]
    else:
        raise BertpipeError(f"corpus not found: {spec}")
    files = [f for f in files if not Path(f).name.startswith(".")]
    if not files:
        raise BertpipeError(f"corpus {spec} holds no files")
    return files


def is_hf_dataset(spec: str) -> bool:
    """A folder (or prefix) written by `datasets`' save_to_disk."""
    if spec == DEMO_CORPUS or any(ch in spec for ch in "*?["):
        return False
    if not storage.is_s3(spec) and not Path(spec).is_dir():
        return False
    return any(storage.exists(storage.join(spec, marker)) for marker in HF_MARKERS)


def _stem_suffix(uri: str) -> str:
    name = PurePosixPath(uri).name.lower()
    for compression in COMPRESSIONS:
        name = name.removesuffix(compression)
    return PurePosixPath(name).suffix


def file_format(uri: str) -> str:
    """The format a file's extension says; files without a known extension are read as text (as always)."""
    return _EXTENSIONS.get(_stem_suffix(uri), "text")


def corpus_format(spec: str, files: list[str], requested: str) -> str:
    """The one format of the corpus: `requested` unless it is 'auto'; mixed formats are an error."""
    if requested != "auto":
        return requested
    by_format: dict[str, str] = {}
    for uri in files:
        by_format.setdefault(file_format(uri), uri)
    if len(by_format) > 1:
        examples = ", ".join(f"{Path(uri).name} ({kind})" for kind, uri in sorted(by_format.items()))
        raise BertpipeError(f"corpus {spec} mixes formats: {examples}; keep one kind of file per corpus or pass --corpus-format")
    return next(iter(by_format))


class _StreamingRaw(io.RawIOBase):
    """A read()-only stream (an S3 body) as a raw stream, so io.BufferedReader can give it lines and peek."""

    def __init__(self, body):
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _decompressor(uri: str, raw: IO[bytes]) -> IO[bytes]:
    name = uri.lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if name.endswith(".bz2"):
        return bz2.BZ2File(raw)
    if name.endswith(".xz"):
        return lzma.LZMAFile(raw)
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError as error:
            raise BertpipeError(f"{uri}: reading .zst needs the zstandard package (pip install zstandard), or recompress as .gz") from error
        return zstandard.ZstdDecompressor().stream_reader(raw)
    return raw


@contextlib.contextmanager
def open_stream(uri: str) -> Iterator[io.BufferedReader]:
    """A file's decompressed bytes as a buffered stream (lines, peek), local or streamed from S3."""
    with storage.open_read(uri) as raw:
        source = raw if not storage.is_s3(uri) else io.BufferedReader(_StreamingRaw(raw), 1 << 20)
        stream = _decompressor(uri, source)
        yield stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(stream, 1 << 20)


def looks_binary(stream: io.BufferedReader) -> bool:
    """NUL bytes in the first 8 KiB: an image, an archive, a model file; never text."""
    return b"\x00" in stream.peek(8192)[:8192]


@contextlib.contextmanager
def read_errors(uri: str) -> Iterator[None]:
    """Decompression and I/O failures as one-line errors naming the file."""
    try:
        yield
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as error:  # gzip raises zlib.error on corrupt bytes
        raise BertpipeError(f"{uri}: cannot be read, it is corrupt or truncated ({error})") from error
