"""One shard: tokenize its documents and run Google's algorithm on them with the shard's own seed.

Writes `{split}/shard-NNNNN.parquet` and the shard's record in the work area. The seed is
computed here from the data seed, the split and the index (never passed along: 64-bit
integers do not survive KFP's JSON numbers), and train shard 0 uses the data seed itself, so
a one-shard run equals Google's create_pretraining_data.py. Results do not depend on which
process makes which shard.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from components.core import instances, storage
from components.core.corpus import split_sentences
from components.core.errors import BertpipeError
from components.core.masking import MaskingConfig
from components.core.settings import from_mapping
from components.core.vocab_files import load_vocab_info, load_vocab_tokens
from components.data import statistics as data_statistics
from components.data.instance_creation import InstanceSettings, TokenizedDocuments, create_instances
from components.data.settings import DataSettings
from components.data.tokenization import CorpusTokenizer
from components.data.work import done_uri, read_plan, shard_name

log = logging.getLogger(__name__)

_TOKENIZE_BATCH_LINES = 16384
EXAMPLE_CHARS = 40  # of an over-long word, in the record and the warning


def shard_seed(seed: int, split: str, index: int) -> int:
    """The seed of one shard; train shard 0 keeps `seed` so a one-shard run reproduces Google's output."""
    if (split, index) == ("train", 0):
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{split}/{index}".encode()).digest()[:8], "big")


def fingerprint(settings: DataSettings, vocab_sha256: str) -> str:
    """What a finished shard's record must carry to be reused: the settings and vocab it was made with."""
    return hashlib.sha256(json.dumps([asdict(settings), vocab_sha256], sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class _Vocab:
    tokens: list[str]
    info: dict


def _read_documents(uri: str) -> list[list[str]]:
    text = gzip.decompress(storage.read_bytes(uri)).decode("utf-8")
    return [block.split("\n") for block in text.split("\n\n") if block]


def _tokenize_documents(raw: list[list[str]], tokenizer: CorpusTokenizer) -> TokenizedDocuments:
    """Token ids per sentence, without sentences that tokenize to nothing and documents left empty (as Google does)."""
    lines = [line for lines in raw for line in lines]
    owners = np.repeat(np.arange(len(raw)), [len(lines) for lines in raw])
    ids, lengths = [], []
    for start in range(0, len(lines), _TOKENIZE_BATCH_LINES):
        batch_ids, batch_lengths = tokenizer.encode_lines(lines[start:start + _TOKENIZE_BATCH_LINES])
        ids.append(batch_ids)
        lengths.append(batch_lengths)
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    kept = lengths > 0
    sentences_per_document = np.bincount(owners[kept], minlength=len(raw))
    return TokenizedDocuments(
        np.concatenate(ids) if ids else np.zeros(0, np.int32),
        np.concatenate([[0], np.cumsum(lengths[kept])]).astype(np.int64),
        np.concatenate([[0], np.cumsum(sentences_per_document[sentences_per_document > 0])]).astype(np.int64),
    )


@lru_cache(maxsize=2)
def _tokenizer(vocab_sha256: str, vocab_tokens: tuple[str, ...], lowercase: bool) -> CorpusTokenizer:
    """One tokenizer per process and vocab: its memory of tokenized chunks serves every shard the process makes."""
    return CorpusTokenizer(list(vocab_tokens), lowercase)


def _instance_settings(settings: DataSettings, vocab: _Vocab, split: str) -> InstanceSettings:
    # Dynamic masking and duplication are for training only: dev and test keep fixed masks, so evaluations
    # compare, and are made once per document (dupe_factor copies would only multiply the evaluation's cost).
    train = split == "train"
    dupe_factor = settings.dupe_factor if train else 1
    return InstanceSettings(settings.max_seq_length, settings.short_seq_prob, dupe_factor, MaskingConfig.for_vocab(vocab.tokens, asdict(settings)), settings.dynamic_masking and train)


def _make_shard(descriptor: dict, vocab: _Vocab, output_uri: str, settings: DataSettings) -> dict:
    """Make one planned shard's instances and write them; returns its record. One finished with the same settings, vocab and text is kept."""
    expected = fingerprint(settings, vocab.info["sha256"])
    name = shard_name(descriptor["split"], descriptor["index"])
    record_uri = done_uri(output_uri, name)
    if storage.exists(record_uri):
        record = storage.read_json(record_uri)
        if record.get("fingerprint") == expected and all(record.get(key) == descriptor.get(key) for key in ("text_sha256", "split_sentences")):
            log.info("shard %s already done, skipped", name)
            return record
    started = time.perf_counter()
    tokenizer = _tokenizer(vocab.info["sha256"], tuple(vocab.tokens), bool(vocab.info["lowercase"]))
    raw = _read_documents(descriptor["documents_uri"])
    if descriptor.get("split_sentences"):  # raw documents: paragraphs, split here so that shards split in parallel
        raw = [sentences for sentences in map(split_sentences, raw) if sentences]
    documents = _tokenize_documents(raw, tokenizer)
    overlong, example = tokenizer.overlong_words([line for lines in raw for line in lines])
    long_sentences = int((documents.sentence_lengths() > settings.max_seq_length - 3).sum())
    tokenized = time.perf_counter()
    seed = shard_seed(settings.seed, descriptor["split"], descriptor["index"])
    table, stats = create_instances(documents, seed, _instance_settings(settings, vocab, descriptor["split"]))
    created = time.perf_counter()
    path = instances.shard_path(descriptor["split"], descriptor["index"])
    written = instances.write_shard(storage.join(output_uri, path), {column: table.column(column) for column in table.column_names})
    record = {
        "split": descriptor["split"],
        "index": descriptor["index"],
        "path": path,
        **written,
        "text_sha256": descriptor["text_sha256"],
        "split_sentences": descriptor.get("split_sentences", False),
        "sentences": sum(map(len, raw)),
        "fingerprint": expected,
        "counts": data_statistics.counts_to_json(stats, long_sentences),
        "overlong_words": {"count": overlong, "example": example[:EXAMPLE_CHARS], "example_chars": len(example)},
    }
    storage.write_json(record_uri, record)
    log.info(
        "shard %s: %d documents -> %d instances (tokenize %.1f s, instances %.1f s, write %.1f s)", name, stats.documents,
        stats.instances, tokenized - started, created - tokenized, time.perf_counter() - created,
    )
    return record


def create_pretraining_shard(output_uri: str, shard: str) -> dict | None:
    """Stage 2 of create-pretraining-data: make the planned shard named `shard` ("train-00012") of `output_uri`.

    Corpus text, settings and vocab come from the plan in the work area. Returns the shard's
    record, or None when the plan keeps data the folder already holds.
    """
    storage.check_output(output_uri)
    plan = read_plan(output_uri)
    if plan["reuse"]:
        return None
    descriptor = next((d for d in plan["shards"] if shard_name(d["split"], d["index"]) == shard), None)
    if descriptor is None:
        raise BertpipeError(f"the shard plan of {output_uri} has no shard {shard!r}; plan the data again")
    vocab = _Vocab(tokens=load_vocab_tokens(plan["vocab_uri"]), info=load_vocab_info(plan["vocab_uri"]))
    if vocab.info["sha256"] != plan["vocab"]["sha256"]:
        raise BertpipeError(f"the vocab at {plan['vocab_uri']} changed after {output_uri} was planned; plan the data again")
    return _make_shard(descriptor, vocab, output_uri, from_mapping(DataSettings, plan["settings"]))
