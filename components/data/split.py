"""Planning: send each document to train/dev/test and cut each split into shards of raw text.

The split of a document comes from a hash of its text, so it is the same for every
max_seq_length (evaluation at 128 and at 512 only sees held-out documents). Each split is
cut into shards of about `shard_size_mb` of text, written to the work area
(components.data.work) with the plan that the shard and merge stages read back.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from dataclasses import asdict

from components.core import instances, storage
from components.core.corpus import Corpus, CorpusSettings
from components.core.errors import BertpipeError
from components.core.settings import check
from components.core.vocab_files import load_vocab_info, load_vocab_tokens
from components.data.reuse import data_key, verified_manifest
from components.data.settings import STEP_NAME, DataSettings, warn_if_unusual
from components.data.work import CORPUS_FILE, remove_tree, shard_name, work_uri, write_plan

log = logging.getLogger(__name__)


def document_split(lines: list[str], dev_fraction: float, test_fraction: float) -> str:
    """train/dev/test for one document, from a hash of its text (stable across runs and sequence lengths)."""
    digest = hashlib.sha256("\n".join(lines).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < dev_fraction:
        return "dev"
    if u < dev_fraction + test_fraction:
        return "test"
    return "train"


class _ShardWriter:
    """Collects one split's documents and writes a shard of raw text whenever it reaches the size limit."""

    def __init__(self, output_uri: str, split: str, settings: DataSettings, split_sentences: bool):
        self.output_uri, self.split = output_uri, split
        self.split_sentences = split_sentences
        self.limit = int(settings.shard_size_mb * 2**20)
        self.pending: list[str] = []
        self.pending_bytes = 0
        self.pending_docs = 0
        self.descriptors: list[dict] = []
        self.documents = 0
        self.one_sentence = 0

    def add(self, lines: list[str]) -> None:
        text = "\n".join(lines) + "\n\n"
        self.pending.append(text)
        self.pending_bytes += len(text.encode("utf-8"))
        self.pending_docs += 1
        self.documents += 1
        self.one_sentence += len(lines) == 1
        if self.pending_bytes >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self.pending_docs:
            return
        index = len(self.descriptors)
        data = "".join(self.pending).encode("utf-8")
        uri = work_uri(self.output_uri, "docs", f"{shard_name(self.split, index)}.txt.gz")
        storage.write_bytes(uri, gzip.compress(data, compresslevel=1, mtime=0))
        self.descriptors.append(
            {"split": self.split, "index": index, "documents_uri": uri, "num_documents": self.pending_docs,
             "num_bytes": len(data), "text_sha256": hashlib.sha256(data).hexdigest(),
             "split_sentences": self.split_sentences}
        )
        self.pending, self.pending_bytes, self.pending_docs = [], 0, 0


def plan_shards(corpus: str, output_uri: str, settings: DataSettings, corpus_settings: CorpusSettings = CorpusSettings()) -> list[dict]:
    """Split the corpus's documents into train/dev/test shards of raw text in the work area; returns their descriptors.

    This one pass sees every document, so it also cleans and deduplicates them (across all
    shards); raw documents go into the shards as paragraphs and are sentence-split by the
    shard workers, in parallel. What it counted goes to the work area's corpus file for the merge.
    """
    reader = Corpus(corpus, corpus_settings)
    writers = {split: _ShardWriter(output_uri, split, settings, reader.needs_splitting) for split in instances.SPLITS}
    for lines in reader.documents(split=False):
        writers[document_split(lines, settings.dev_fraction, settings.test_fraction)].add(lines)
    for writer in writers.values():
        writer.flush()
    total = sum(w.documents for w in writers.values())
    if total == 0:
        raise BertpipeError(_no_documents(corpus, reader))
    storage.write_json(work_uri(output_uri, CORPUS_FILE), {"format": reader.format, "settings": asdict(corpus_settings), "counts": reader.counts.as_dict()})
    fractions = {"dev": settings.dev_fraction, "test": settings.test_fraction, "train": 1.0}
    for split, writer in writers.items():
        if fractions[split] > 0 and writer.documents == 0:
            if total == 1:
                raise BertpipeError(
                    f"corpus {corpus} is ONE document ({reader.document_unit}), "
                    f"so the {split} split gets none: split it into documents, or set --dev-fraction 0 --test-fraction 0"
                )
            raise BertpipeError(
                f"{split} split got no documents from the {total} in {corpus}"
                + (f"; raise --{split}-fraction or set it to 0" if split != "train" else "; lower --dev-fraction/--test-fraction")
            )
    if total == 1:
        log.warning("corpus %s is ONE document (no blank lines?): every random-next segment comes from the same document; separate documents with blank lines", corpus)
    one_sentence = sum(w.one_sentence for w in writers.values())
    if not reader.needs_splitting and one_sentence > 0.05 * total:
        log.warning("%d of %d documents have a single sentence: they only make random-next pairs; is the corpus one sentence per line?", one_sentence, total)
    log.info("corpus %s (%s): %s", corpus, reader.format, reader.counts.describe())
    descriptors = [d for split in instances.SPLITS for d in writers[split].descriptors]
    log.info(
        "planned %d shards from %d documents (train %d, dev %d, test %d)",
        len(descriptors), total, writers["train"].documents, writers["dev"].documents, writers["test"].documents,
    )
    return descriptors


def _no_documents(corpus: str, reader: Corpus) -> str:
    counts = reader.counts
    if not reader.is_raw:
        return f"corpus {corpus} holds no documents (only blank lines); it needs one sentence per line, blank lines between documents"
    dropped = f"{counts.empty} empty, {counts.short} under --min-document-chars={reader.settings.min_document_chars}, {counts.duplicates} duplicates"
    return f"corpus {corpus} ({reader.format}) left no documents: {counts.records} read, {dropped}, {counts.bad_records} bad records skipped"


def corpus_fingerprint(descriptors: list[dict]) -> str:
    """One hash over every shard's text: equal iff the planned documents are equal."""
    joined = "".join(f"{d['split']}/{d['index']}:{d['text_sha256']};" for d in descriptors)
    return hashlib.sha256(joined.encode()).hexdigest()


def _existing_manifest(output_uri: str) -> dict | None:
    uri = storage.join(output_uri, instances.MANIFEST_FILE)
    return storage.read_json(uri) if storage.exists(uri) else None


def plan_pretraining_data(corpus: str, vocab_uri: str, output_uri: str, settings: DataSettings = DataSettings(),
                          corpus_settings: CorpusSettings = CorpusSettings(), fingerprint: str = "") -> list[str]:
    """Stage 1 of create-pretraining-data: plan the shards of `output_uri`; returns their names, to make one by one.

    When the folder already holds this data the plan says so and the shard and merge stages keep
    it: at once, without reading the corpus, when its manifest records this content key
    (components.data.reuse; `fingerprint` = the corpus's, computed when not given) and every shard
    verifies; else after planning, when corpus, vocab and settings are the same (the corpus is read
    with `corpus_settings`). Otherwise an old manifest is removed first, so a reader never sees old
    and new data mixed; shards finished by an interrupted run with the same settings are kept (the
    shard stage skips them). Bad input leaves nothing behind.
    """
    check(settings, STEP_NAME)
    check(corpus_settings, STEP_NAME)
    warn_if_unusual(settings)
    storage.check_output(output_uri)
    load_vocab_tokens(vocab_uri)  # refuses a vocab without BERT's special tokens before anything is written
    vocab_info = load_vocab_info(vocab_uri)
    key = data_key(corpus, vocab_info["sha256"], settings, corpus_settings, fingerprint)
    kept = verified_manifest(output_uri, key)
    if kept:
        log.info("reused the data at %s: complete, every shard there at its size, made from the same corpus, vocab and settings (content key %s)", output_uri, key)
        write_plan(output_uri, {"corpus": corpus, "vocab_uri": vocab_uri, "content_key": key, "reuse": True, "shards": []})
        return [shard_name(split, index) for split in instances.SPLITS for index in range(len(kept["splits"][split]["shards"]))]
    folder_existed = storage.is_s3(output_uri) or os.path.exists(output_uri)
    resumable = folder_existed and bool(storage.list_files(work_uri(output_uri, "done")))
    try:
        descriptors = plan_shards(corpus, output_uri, settings, corpus_settings)
    except BaseException:
        if not resumable:
            remove_tree(work_uri(output_uri))
        if not folder_existed and os.path.isdir(output_uri) and not os.listdir(output_uri):
            os.rmdir(output_uri)
        raise
    corpus_sha256 = corpus_fingerprint(descriptors)
    previous = _existing_manifest(output_uri)
    reuse = bool(previous) and previous.get("settings") == asdict(settings) and previous.get("vocab_sha256") == vocab_info["sha256"] \
        and previous.get("corpus_sha256") == corpus_sha256 and previous.get("corpus_reading", {}).get("settings") == asdict(corpus_settings) \
        and verified_manifest(output_uri, previous.get("content_key")) is not None
    if reuse:
        log.info("%s already holds this data (same corpus, vocab and settings); reused", output_uri)
    elif previous:
        storage.delete(storage.join(output_uri, instances.MANIFEST_FILE))
    vocab = {key: vocab_info[key] for key in ("sha256", "size", "lowercase")}
    write_plan(output_uri, {"corpus": corpus, "vocab_uri": vocab_uri, "vocab": vocab, "settings": asdict(settings), "corpus_settings": asdict(corpus_settings),
                            "corpus_sha256": corpus_sha256, "content_key": key, "reuse": reuse, "shards": descriptors})
    return [shard_name(d["split"], d["index"]) for d in descriptors]
