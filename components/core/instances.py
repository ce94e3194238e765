"""The on-disk format of pretraining instances: unpadded Parquet shards plus a manifest.

A data folder (written by create-pretraining-data, read by training and evaluation):

    manifest.json              schema_version, max_seq_length, vocab_sha256, settings,
                               splits{train,dev,test}{num_documents, num_instances,
                               num_tokens, shards[{path, num_instances, sha256, num_bytes}]}, statistics
    {split}/shard-00000.parquet
    data_card.md

Each row is one instance, masks already applied (the fixed masks make evaluation
comparable across runs); padding happens in the collator, to the batch's longest row.
"""

from __future__ import annotations

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq

from components.core import storage
from components.core.errors import BertpipeError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
SPLITS = ("train", "dev", "test")

SCHEMA = pa.schema(
    [
        # [CLS] A [SEP] B [SEP], with masked positions already replaced.
        pa.field("input_ids", pa.list_(pa.int32())),
        # Leading tokens with token_type_id 0: len(A) + 2 ([CLS] and the first [SEP]).
        pa.field("segment_a_length", pa.int16()),
        # Sorted positions of the masked tokens and their original ids.
        pa.field("masked_lm_positions", pa.list_(pa.int16())),
        pa.field("masked_lm_ids", pa.list_(pa.int32())),
        # 0: B follows A in the document; 1: B is random text (Google's convention and HF's).
        pa.field("next_sentence_label", pa.int8()),
    ]
)


def shard_path(split: str, index: int) -> str:
    return f"{split}/shard-{index:05d}.parquet"


def encode_shard(rows: dict[str, list]) -> bytes:
    """Parquet bytes for a column dict; identical input gives identical bytes."""
    table = pa.Table.from_pydict(rows, schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", write_statistics=False, store_schema=True)
    return buffer.getvalue()


def write_shard(uri: str, rows: dict[str, list]) -> dict:
    """Write one shard atomically; returns its manifest entry fields (num_instances, sha256, num_bytes)."""
    data = encode_shard(rows)
    storage.write_bytes(uri, data)
    return {"num_instances": len(rows["input_ids"]), "sha256": hashlib.sha256(data).hexdigest(), "num_bytes": len(data)}


def read_manifest(data_uri: str) -> dict:
    uri = storage.join(data_uri, MANIFEST_FILE)
    if not storage.exists(uri):
        raise BertpipeError(f"{data_uri} holds no pretraining data ({MANIFEST_FILE} missing); run `bertpipe create-pretraining-data`")
    manifest = storage.read_json(uri)
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise BertpipeError(f"{data_uri} has data schema {manifest.get('schema_version')}, this bertpipe reads {SCHEMA_VERSION}; recreate the data")
    return manifest


def manifest_sha256(data_uri: str) -> str:
    """The hash that identifies a data folder's exact content (the manifest holds every shard's checksum)."""
    return hashlib.sha256(storage.read_bytes(storage.join(data_uri, MANIFEST_FILE))).hexdigest()


def check_compatible(manifest: dict, data_uri: str, *, max_seq_length: int | None = None, vocab_sha256: str | None = None) -> None:
    """Refuse data made for another sequence length or vocab than the consumer expects."""
    if max_seq_length is not None and manifest["max_seq_length"] != max_seq_length:
        raise BertpipeError(f"{data_uri} was made with max_seq_length {manifest['max_seq_length']}, expected {max_seq_length}")
    if vocab_sha256 is not None and manifest["vocab_sha256"] != vocab_sha256:
        raise BertpipeError(f"{data_uri} was made with another vocab (sha256 {manifest['vocab_sha256'][:12]}, expected {vocab_sha256[:12]})")


def read_shard(uri: str, expected_sha256: str | None = None) -> pa.Table:
    data = storage.read_bytes(uri)
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise BertpipeError(f"shard {uri} does not match its manifest checksum; it is corrupt or was overwritten: delete its data folder to make the data again")
    return pq.ParquetFile(pa.BufferReader(data)).read()  # not pq.read_table: its dataset layer imports pandas (a second at start-up)


def load_split(data_uri: str, split: str, manifest: dict | None = None) -> pa.Table:
    """All instances of one split as one Arrow table (checksums verified)."""
    manifest = manifest or read_manifest(data_uri)
    if split not in manifest["splits"]:
        raise BertpipeError(f"{data_uri} has no {split!r} split")
    shards = manifest["splits"][split]["shards"]
    tables = [read_shard(storage.join(data_uri, s["path"]), s.get("sha256")) for s in shards]
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def data_folders(data_uris: dict) -> dict[int, str]:
    """{max_seq_length: data URI}, sorted by length, from a mapping whose keys may be strings (KFP and JSON give those)."""
    if not data_uris:
        raise BertpipeError("no data folders given: pass them by max_seq_length, like {\"128\": \"./data-128\", \"512\": \"./data-512\"}")
    if not all(str(length).isdigit() for length in data_uris):
        raise BertpipeError(f"data folders must be keyed by max_seq_length, like {{\"128\": \"./data-128\"}}, not {', '.join(sorted(map(str, data_uris)))}")
    return {int(length): uri for length, uri in sorted(data_uris.items(), key=lambda item: int(item[0]))}
