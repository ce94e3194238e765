"""Read a text corpus: one sentence per line, a blank line between documents.

A corpus is given as a file, a folder, a glob (``data/*.txt.gz``) or an s3://
prefix; files ending in .gz are decompressed on the fly. Files are read as
streams, in sorted order, so the document order is reproducible.
"""

from __future__ import annotations

import glob
import gzip
from importlib import resources
from pathlib import Path
from typing import Iterator

from components.core import storage
from components.core.errors import BertpipeError

DEMO_CORPUS = "demo"


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


def iter_lines(uri: str) -> Iterator[str]:
    """The lines of one corpus file, decoded as UTF-8 (a clear error names the file and line otherwise)."""
    with storage.open_read(uri) as raw:
        if uri.endswith(".gz"):
            lines = gzip.GzipFile(fileobj=raw)
        else:  # an S3 body iterates in fixed-size chunks, not lines
            lines = raw.iter_lines() if storage.is_s3(uri) else raw
        line_number = 0
        try:
            for line_number, line in enumerate(lines, start=1):
                yield line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BertpipeError(f"{uri}: line {line_number} is not valid UTF-8 ({error.reason}); re-encode the corpus as UTF-8") from error
        except (OSError, EOFError) as error:
            raise BertpipeError(f"{uri}: cannot be read ({error})") from error


def iter_documents(spec: str) -> Iterator[list[str]]:
    """Documents as lists of stripped, non-empty lines; a blank line or a new file ends a document."""
    for uri in resolve_corpus_files(spec):
        document: list[str] = []
        for line in iter_lines(uri):
            line = line.strip()
            if line:
                document.append(line)
            elif document:
                yield document
                document = []
        if document:
            yield document
