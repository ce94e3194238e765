"""Content-keyed data folders: the key of a data folder's inputs and settings, and whether a folder holds it, verified.

A pipeline run writes its data to `{artifact_root}/cache/data-{max_seq_length}-{key}/`, so the
same corpus, vocab and settings give the same folder: a later run finds it complete (its
manifest, written last, records the key) and whole (every shard there, at the size it was
written: one listing, however large the corpus), and reuses it without reading the corpus
again. Content is checked where it is read: every reader checks each shard's sha256
(components.core.instances.read_shard). Shards without a recorded size (older data) are read
and checked here.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict

from components.core import instances, storage
from components.core.content_key import cache_uri, content_key, source_fingerprint
from components.core.corpus import CorpusSettings
from components.core.errors import BertpipeError
from components.core.storage import s3
from components.core.vocab_files import load_vocab_info
from components.data.settings import DataSettings

log = logging.getLogger(__name__)

# Bump when a code change makes other instances from the same inputs and settings (it changes every data key).
DATA_FORMAT = 1


def data_key(corpus: str, vocab_sha256: str, settings: DataSettings, corpus_settings: CorpusSettings, fingerprint: str = "") -> str:
    """What a data folder is made from and how (`fingerprint`: the corpus's source_fingerprint, computed here when not given)."""
    return content_key("data", instances.SCHEMA_VERSION, DATA_FORMAT, corpus, fingerprint or source_fingerprint(corpus), vocab_sha256,
                       asdict(settings), asdict(corpus_settings))


def data_location(artifact_root: str, corpus: str, vocab_uri: str, settings: DataSettings, corpus_settings: CorpusSettings, fingerprint: str) -> str:
    """The content-keyed data folder of a pipeline run for one sequence length."""
    key = data_key(corpus, load_vocab_info(vocab_uri)["sha256"], settings, corpus_settings, fingerprint)
    return cache_uri(artifact_root, f"data-{settings.max_seq_length}", key)


def _shard_verified(uri: str, sha256: str) -> bool:
    try:
        return hashlib.sha256(storage.read_bytes(uri)).hexdigest() == sha256
    except BertpipeError:
        return False


def _shards_whole(output_uri: str, manifest: dict) -> bool:
    """Every shard of the manifest is there at its recorded size (one listing); those without a size match their sha256."""
    sizes = storage.file_sizes(output_uri)
    unsized = []
    for shard in (s for split in manifest["splits"].values() for s in split["shards"]):
        uri, recorded = storage.join(output_uri, shard["path"]), shard.get("num_bytes")
        if uri not in sizes or recorded not in (None, sizes[uri]):
            return False
        if recorded is None:
            unsized.append((uri, shard["sha256"]))
    return all(s3.parallel(lambda item: _shard_verified(*item), unsized))


def verified_manifest(output_uri: str, key: str) -> dict | None:
    """The manifest of output_uri when it is complete, made with this key and every shard is whole; else None."""
    uri = storage.join(output_uri, instances.MANIFEST_FILE)
    try:
        manifest = storage.read_json(uri) if storage.exists(uri) else None
    except (BertpipeError, ValueError):
        return None
    if not manifest or manifest.get("content_key") != key:
        return None
    if not _shards_whole(output_uri, manifest):
        log.warning("%s has a manifest for this data but a shard is missing or not as written; making it again", output_uri)
        return None
    return manifest
