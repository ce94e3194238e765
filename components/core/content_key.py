"""Content keys: one short name for "these inputs, read with these settings", so an output can be found again.

The vocab and data steps write under `{artifact_root}/cache/{name}-{key}/`: the same corpus
and settings give the same folder, which a later run reuses (and Kubeflow's cache can hit,
since no run id is among those tasks' inputs).

A corpus (or a tokenizer folder) is fingerprinted by LISTING it, not reading it: each file's
path, size and modification time locally, or size and ETag on S3 (the MD5 of the content for
an object uploaded in one part, a hash of its parts' MD5s for a multipart upload; a re-upload
changes either). Listing a 30 GB corpus takes seconds where hashing it would take about as
long as the planning pass the key is meant to save. What it misses: a file rewritten in place
with the same size and modification time (`touch` it to force a rebuild). A hub id is keyed
by its name only (no hub is reached at run time).
"""

from __future__ import annotations

import hashlib
import json
import os

from components.core import demo_checkpoint, storage
from components.core.corpus.files import DEMO_CORPUS, is_hf_dataset, resolve_corpus_files

CACHE_FOLDER = "cache"


def _stamps(spec: str, files: list[str]) -> dict[str, str]:
    if storage.is_s3(spec):
        listed = storage.file_stamps(spec)
        return {uri: listed[uri] for uri in files}
    return {path: stamp for path in files for stamp in storage.file_stamps(path).values()}


def source_fingerprint(spec: str) -> str:
    """A hash of the files a corpus spec (file, folder, glob, s3:// prefix, 'demo', saved dataset) or a
    tokenizer folder names, with their sizes and stamps; for anything else (a hub id) of the spec itself."""
    if not spec:
        return ""
    if is_hf_dataset(spec):
        files = storage.list_files(spec)
    elif spec == DEMO_CORPUS or storage.is_s3(spec) or any(ch in spec for ch in "*?[") or os.path.exists(spec):
        files = resolve_corpus_files(spec)
    else:
        return content_key("name", spec)
    return content_key(spec, _stamps(spec, files))


def tokenizer_fingerprint(source: str) -> str:
    """source_fingerprint of a tokenizer/model source, where "demo" is the bundled checkpoint, not the demo corpus."""
    return source_fingerprint(demo_checkpoint.resolve(source))


def input_fingerprints(corpus: str, vocab_source: str = "") -> tuple[str, str]:
    """(the corpus's fingerprint, that of what the vocab is made from: the tokenizer exported, else the corpus)."""
    of_corpus = source_fingerprint(corpus)
    return of_corpus, (tokenizer_fingerprint(vocab_source) if vocab_source else of_corpus)


def content_key(*parts) -> str:
    """20 hex digits of a sha256 over JSON-able parts (settings as dicts, fingerprints, format versions)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_uri(artifact_root: str, name: str, key: str) -> str:
    """Where a content-keyed output lives: `{artifact_root}/cache/{name}-{key}`."""
    return storage.join(artifact_root, CACHE_FOLDER, f"{name}-{key}")
