"""Content-keyed data folders: the key of a data folder's inputs and settings, and whether a folder holds it, verified.

A pipeline run writes its data to `{artifact_root}/cache/data-{max_seq_length}-{key}/`, so the
same corpus, vocab and settings give the same folder: a later run finds it complete (its
manifest, written last, records the key) and verified (every shard's sha256), and reuses it
without reading the corpus again.
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


def verified_manifest(output_uri: str, key: str) -> dict | None:
    """The manifest of output_uri when it is complete, made with this key and every shard matches its sha256; else None."""
    uri = storage.join(output_uri, instances.MANIFEST_FILE)
    try:
        manifest = storage.read_json(uri) if storage.exists(uri) else None
    except (BertpipeError, ValueError):
        return None
    if not manifest or manifest.get("content_key") != key:
        return None
    shards = [(storage.join(output_uri, s["path"]), s["sha256"]) for split in manifest["splits"].values() for s in split["shards"]]
    if not all(s3.parallel(lambda shard: _shard_verified(*shard), shards)):
        log.warning("%s has a manifest for this data but a shard is missing or does not match its checksum; making it again", output_uri)
        return None
    return manifest
