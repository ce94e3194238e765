"""The create-pretraining-data step: corpus -> masked NSP instances (Google's algorithm), sharded, with statistics.

Three stages, callable separately so a pipeline can fan out over shards:

1. `plan_shards`: stream the corpus once, send each DOCUMENT to train/dev/test by a
   stable hash of its text (the same split for every max_seq_length), and cut each
   split into shards of about `shard_size_mb` of text, written to `.work/` in the
   output folder. Returns one JSON-safe descriptor per shard.
2. `process_shard`: tokenize one shard's documents and run Google's algorithm on them
   with the shard's own seed (train shard 0 uses `seed` itself, so a one-shard run
   equals Google's create_pretraining_data.py); writes `{split}/shard-NNNNN.parquet`
   and a record in `.work/done/`. Results do not depend on how many workers run.
3. `merge_manifests`: sum the shard records into statistics, write data_card.md and,
   last, manifest.json; then drop `.work/`.

`create_pretraining_data` runs the three with `num_workers` local processes (this one and
`num_workers - 1` spawned ones, taking shards from one queue). Memory
grows with the shard size, not the corpus. Re-running over a folder whose manifest has
the same settings, vocab and corpus returns it as is; otherwise the old manifest is
removed first (a reader never sees old and new data mixed) and the data is rewritten,
skipping shards already finished by an interrupted run with the same settings.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import hashlib
import json
import logging
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from components.data import statistics as data_statistics
from components.core import instances
from components.core import storage
from components.core.corpus import Corpus, CorpusCounts, CorpusSettings, split_sentences
from components.core.errors import BertpipeError
from components.core.settings import check
from components.data.instance_creation import InstanceSettings, TokenizedDocuments, create_instances, load_compiled
from components.core.masking import MaskingConfig
from components.data.tokenization import CorpusTokenizer
from components.core.tracking import Tracking, log_metrics, step_run

log = logging.getLogger(__name__)

WORK_DIR = ".work"
CORPUS_FILE = "corpus.json"
STEP_NAME = "create-pretraining-data"
_TOKENIZE_BATCH_LINES = 16384


@dataclass(frozen=True)
class DataSettings:
    """Every setting that changes the output (recorded in the manifest; equal settings -> equal bytes)."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.1
    dupe_factor: int = 1
    do_whole_word_mask: bool = True
    per_word_replacement: bool = False
    dynamic_masking: bool = False
    dev_fraction: float = 0.02
    test_fraction: float = 0.02
    seed: int = 12345
    shard_size_mb: float = 16.0

    def validate(self) -> None:
        checks = [
            (5 <= self.max_seq_length <= 32767, "max_seq_length must be between 5 and 32767"),
            (self.max_predictions_per_seq >= 1, "max_predictions_per_seq must be at least 1"),
            (0.0 < self.masked_lm_prob < 1.0, "masked_lm_prob must be between 0 and 1"),
            (0.0 <= self.short_seq_prob <= 1.0, "short_seq_prob must be between 0 and 1"),
            (self.dupe_factor >= 1, "dupe_factor must be at least 1"),
            (self.dev_fraction >= 0 and self.test_fraction >= 0, "dev_fraction and test_fraction must not be negative"),
            (self.dev_fraction + self.test_fraction < 1.0, "dev_fraction + test_fraction must leave documents for training (< 1)"),
            (self.shard_size_mb > 0, "shard_size_mb must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise BertpipeError(f"create-pretraining-data: {message}")
        expected = self.masked_lm_prob * self.max_seq_length
        if not 0.8 * expected <= self.max_predictions_per_seq <= 1.5 * expected:
            log.warning(
                "max_predictions_per_seq=%d is far from masked_lm_prob x max_seq_length = %.1f: %s",
                self.max_predictions_per_seq, expected,
                "long sequences get fewer masks than masked_lm_prob asks" if self.max_predictions_per_seq < expected else "the cap never binds",
            )


def document_split(lines: list[str], dev_fraction: float, test_fraction: float) -> str:
    """train/dev/test for one document, from a hash of its text (stable across runs and sequence lengths)."""
    digest = hashlib.sha256("\n".join(lines).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < dev_fraction:
        return "dev"
    if u < dev_fraction + test_fraction:
        return "test"
    return "train"


def shard_seed(seed: int, split: str, index: int) -> int:
    """The seed of one shard; train shard 0 keeps `seed` so a one-shard run reproduces Google's output."""
    if (split, index) == ("train", 0):
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{split}/{index}".encode()).digest()[:8], "big")


def _work(output_uri: str, *parts: str) -> str:
    return storage.join(output_uri, WORK_DIR, *parts)


def _shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


class _ShardWriter:
    """Collects one split's documents and writes a shard of raw text whenever it reaches the size limit."""

    def __init__(self, output_uri: str, split: str, settings: DataSettings, split_sentences: bool):
        self.output_uri, self.split, self.settings = output_uri, split, settings
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
        uri = _work(self.output_uri, "docs", f"{_shard_name(self.split, index)}.txt.gz")
        storage.write_bytes(uri, gzip.compress(data, compresslevel=1, mtime=0))
        self.descriptors.append(
            {
                "split": self.split,
                "index": index,
                "seed": shard_seed(self.settings.seed, self.split, index),
                "documents_uri": uri,
                "num_documents": self.pending_docs,
                "num_bytes": len(data),
                "text_sha256": hashlib.sha256(data).hexdigest(),
                "split_sentences": self.split_sentences,
            }
        )
        self.pending, self.pending_bytes, self.pending_docs = [], 0, 0


def plan_shards(corpus: str, output_uri: str, settings: DataSettings, corpus_settings: CorpusSettings = CorpusSettings()) -> list[dict]:
    """Split the corpus's documents into train/dev/test shards of raw text under output_uri/.work/; returns their descriptors.

    This one pass sees every document, so it also cleans and deduplicates them (across all
    shards); raw documents go into the shards as paragraphs and are sentence-split by the
    shard workers, in parallel. What it counted goes to .work/corpus.json for the merge.
    """
    settings.validate()
    check(corpus_settings, STEP_NAME)
    reader = Corpus(corpus, corpus_settings)
    writers = {split: _ShardWriter(output_uri, split, settings, reader.needs_splitting) for split in instances.SPLITS}
    for lines in reader.documents(split=False):
        writers[document_split(lines, settings.dev_fraction, settings.test_fraction)].add(lines)
    for writer in writers.values():
        writer.flush()
    total = sum(w.documents for w in writers.values())
    if total == 0:
        raise BertpipeError(_no_documents(corpus, reader))
    storage.write_json(_work(output_uri, CORPUS_FILE), {"format": reader.format, "settings": asdict(corpus_settings), "counts": reader.counts.as_dict()})
    fractions = {"dev": settings.dev_fraction, "test": settings.test_fraction, "train": 1.0}
    for split, writer in writers.items():
        if fractions[split] > 0 and writer.documents == 0:
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


@dataclass(frozen=True)
class _Vocab:
    tokens: list[str]
    info: dict


def _load_vocab(vocab_uri: str) -> _Vocab:
    # Imported here: loading the vocab module at import time would cost shard workers its imports.
    from components.core.vocab_files import load_vocab_info, load_vocab_tokens

    return _Vocab(tokens=load_vocab_tokens(vocab_uri), info=load_vocab_info(vocab_uri))


def _instance_settings(settings: DataSettings, vocab: _Vocab, split: str) -> InstanceSettings:
    # Dynamic masking is for training only: dev and test keep fixed masks, so evaluations compare.
    dynamic = settings.dynamic_masking and split == "train"
    return InstanceSettings(settings.max_seq_length, settings.short_seq_prob, settings.dupe_factor, MaskingConfig.for_vocab(vocab.tokens, asdict(settings)), dynamic)


def _fingerprint(settings: DataSettings, vocab_sha256: str) -> str:
    return hashlib.sha256(json.dumps([asdict(settings), vocab_sha256], sort_keys=True).encode()).hexdigest()


def process_shard(descriptor: dict, vocab_uri: str, output_uri: str, settings: DataSettings) -> dict:
    """Make one shard's instances and write them; returns the shard record merge_manifests needs.

    A shard already finished with the same settings, vocab and text is not redone.
    """
    return _process_shard(descriptor, _load_vocab(vocab_uri), output_uri, settings)


def _process_shard(descriptor: dict, vocab: _Vocab, output_uri: str, settings: DataSettings) -> dict:
    fingerprint = _fingerprint(settings, vocab.info["sha256"])
    name = _shard_name(descriptor["split"], descriptor["index"])
    done_uri = _work(output_uri, "done", f"{name}.json")
    if storage.exists(done_uri):
        record = storage.read_json(done_uri)
        if record.get("fingerprint") == fingerprint and all(record.get(key) == descriptor.get(key) for key in ("text_sha256", "split_sentences")):
            log.info("shard %s already done, skipped", name)
            return record
    started = time.perf_counter()
    tokenizer = _tokenizer(vocab.info["sha256"], tuple(vocab.tokens), bool(vocab.info["lowercase"]))
    raw = _read_documents(descriptor["documents_uri"])
    if descriptor.get("split_sentences"):  # raw documents: paragraphs, split here so that shards split in parallel
        raw = [sentences for sentences in map(split_sentences, raw) if sentences]
    documents = _tokenize_documents(raw, tokenizer)
    long_sentences = int((documents.sentence_lengths() > settings.max_seq_length - 3).sum())
    tokenized = time.perf_counter()
    table, stats = create_instances(documents, descriptor["seed"], _instance_settings(settings, vocab, descriptor["split"]))
    created = time.perf_counter()
    path = instances.shard_path(descriptor["split"], descriptor["index"])
    written = instances.write_shard(storage.join(output_uri, path), {name: table.column(name) for name in table.column_names})
    record = {
        "split": descriptor["split"],
        "index": descriptor["index"],
        "path": path,
        **written,
        "text_sha256": descriptor["text_sha256"],
        "split_sentences": descriptor.get("split_sentences", False),
        "sentences": sum(map(len, raw)),
        "fingerprint": fingerprint,
        "counts": data_statistics.counts_to_json(stats, long_sentences),
    }
    storage.write_json(done_uri, record)
    log.info(
        "shard %s: %d documents -> %d instances (tokenize %.1f s, instances %.1f s, write %.1f s)", name, stats.documents,
        stats.instances, tokenized - started, created - tokenized, time.perf_counter() - created,
    )
    return record


def _remove_tree(uri: str) -> None:
    """Delete a folder or S3 prefix (the work area, stale shards of an earlier run)."""
    if not storage.is_s3(uri):
        import shutil

        shutil.rmtree(uri, ignore_errors=True)
        return
    for file_uri in storage.list_files(uri):
        storage.delete(file_uri)


def _manifest_header(corpus: str, settings: DataSettings, vocab_info: dict, corpus_sha256: str) -> dict:
    return {
        "schema_version": instances.SCHEMA_VERSION,
        "max_seq_length": settings.max_seq_length,
        "vocab_sha256": vocab_info["sha256"],
        "vocab_size": vocab_info["size"],
        "lowercase": vocab_info["lowercase"],
        "corpus": corpus,
        "corpus_sha256": corpus_sha256,
        "settings": asdict(settings),
    }


def _corpus_reading(output_uri: str, records: list[dict]) -> dict:
    """The corpus format, its settings and counts from the planning pass; sentences come from the shards
    when they split the documents."""
    reading = storage.read_json(_work(output_uri, CORPUS_FILE))
    counts = CorpusCounts(**reading["counts"])
    if any(record.get("split_sentences") for record in records):
        counts.sentences = sum(record.get("sentences", 0) for record in records)
    return {**reading, "counts": counts.summary()}


def corpus_fingerprint(descriptors: list[dict]) -> str:
    """One hash over every shard's text: equal iff the planned documents are equal."""
    joined = "".join(f"{d['split']}/{d['index']}:{d['text_sha256']};" for d in descriptors)
    return hashlib.sha256(joined.encode()).hexdigest()


def merge_manifests(
    output_uri: str, records: list[dict], corpus: str, vocab_uri: str, settings: DataSettings, corpus_sha256: str, tracking: Tracking | None = None
) -> dict:
    """Write data_card.md and then manifest.json from the shard records; removes the work area and stale shards.

    With `tracking`, the settings and per-split statistics go to the step's MLflow run.
    """
    vocab_info = _load_vocab(vocab_uri).info
    manifest = _manifest_header(corpus, settings, vocab_info, corpus_sha256)
    manifest["corpus_reading"] = _corpus_reading(output_uri, records)
    manifest["splits"], manifest["statistics"] = {}, {}
    for split in instances.SPLITS:
        mine = sorted((r for r in records if r["split"] == split), key=lambda r: r["index"])
        counts: dict = {}
        for record in mine:
            counts = data_statistics.add_counts(counts, record["counts"])
        summary = data_statistics.summarize(counts)
        manifest["splits"][split] = {
            "num_documents": summary["documents"],
            "num_instances": summary["instances"],
            "num_tokens": summary["tokens"],
            "shards": [{"path": r["path"], "num_instances": r["num_instances"], "sha256": r["sha256"]} for r in mine],
        }
        manifest["statistics"][split] = summary
    referenced = {storage.join(output_uri, s["path"]) for split in manifest["splits"].values() for s in split["shards"]}
    for split in instances.SPLITS:
        split_uri = storage.join(output_uri, split)
        if storage.is_s3(output_uri) or os.path.isdir(split_uri):
            for stale in set(storage.list_files(split_uri)) - referenced:
                storage.delete(stale)
    storage.write_text(storage.join(output_uri, "data_card.md"), data_statistics.data_card(manifest))
    long_sentences = sum(summary["long_sentences"] for summary in manifest["statistics"].values())
    if long_sentences:
        log.warning(
            "%d sentences are longer than max_seq_length - 3 = %d tokens and get cut (Google's truncation); "
            "if that is many, check that the corpus has one sentence per line", long_sentences, settings.max_seq_length - 3,
        )
    if tracking:
        reading = manifest["corpus_reading"]
        params = {"corpus": corpus, "vocab_uri": vocab_uri, "output_uri": output_uri, "corpus_format": reading["format"], **asdict(settings),
                  **{key: value for key, value in reading["settings"].items() if key != "corpus_format"}}
        with step_run(tracking, STEP_NAME, params):
            log_metrics({**data_statistics.metrics_for_mlflow(manifest["statistics"]), **data_statistics.corpus_metrics(reading["counts"])})
    storage.write_json(storage.join(output_uri, instances.MANIFEST_FILE), manifest)
    _remove_tree(_work(output_uri))
    log.info(
        "pretraining data at %s: %s", output_uri,
        ", ".join(f"{split} {manifest['splits'][split]['num_instances']:,} instances" for split in instances.SPLITS),
    )
    return manifest


def _existing_manifest(output_uri: str) -> dict | None:
    uri = storage.join(output_uri, instances.MANIFEST_FILE)
    return storage.read_json(uri) if storage.exists(uri) else None


def _process_all(descriptors: list[dict], vocab: _Vocab, output_uri: str, settings: DataSettings, pool, pool_size: int) -> list[dict]:
    """Every shard's record, in order; with a pool its workers and this process take shards from one queue."""
    from tqdm import tqdm

    # Workers get the vocab itself: loading it would import components.vocab.export and with it mlflow.
    queue = collections.deque(enumerate((d, vocab, output_uri, settings) for d in descriptors))
    records: list[dict | None] = [None] * len(queue)
    failures: list[BaseException] = []
    progress = tqdm(total=len(queue), desc="shards", unit="shard", disable=len(queue) < 2)

    def done(index: int, record: dict) -> None:
        records[index] = record
        progress.update()

    def feed() -> None:  # give a worker the next shard when it is free (runs in the pool's result thread)
        try:
            index, job = queue.popleft()
        except IndexError:
            return
        pool.apply_async(_process_job, (job,), callback=lambda record: (done(index, record), feed()), error_callback=failures.append)

    if pool is not None:
        for _ in range(pool_size):
            feed()
    while not failures:
        try:
            index, job = queue.popleft()
        except IndexError:
            break
        done(index, _process_shard(*job))
    if pool is not None:
        pool.close()
        pool.join()
    progress.close()
    if failures:
        raise failures[0]
    return records  # type: ignore[return-value]


@contextlib.contextmanager
def _worker_pool(num_workers: int):
    """`num_workers - 1` processes besides this one (None for one worker), started before the corpus is planned
    so that their start (imports, loading the compiled loop) overlaps the planning."""
    if num_workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(num_workers - 1, initializer=_start_worker, initargs=(logging.getLogger().getEffectiveLevel(),)) as pool:
        yield pool


def _start_worker(log_level: int) -> None:
    # One core per worker: the Rust tokenizer's own thread pool would oversubscribe the machine.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(name)s %(message)s")
    load_compiled()


def _process_job(job: tuple) -> dict:
    return _process_shard(*job)


def create_pretraining_data(
    corpus: str,
    vocab_uri: str,
    output_uri: str,
    *,
    max_seq_length: int = 128,
    max_predictions_per_seq: int = 20,
    masked_lm_prob: float = 0.15,
    short_seq_prob: float = 0.1,
    dupe_factor: int = 1,
    do_whole_word_mask: bool = True,
    per_word_replacement: bool = False,
    dynamic_masking: bool = False,
    dev_fraction: float = 0.02,
    test_fraction: float = 0.02,
    seed: int = 12345,
    shard_size_mb: float = 16.0,
    num_workers: int = 1,
    corpus_settings: CorpusSettings = CorpusSettings(),
    tracking: Tracking | None = None,
) -> dict:
    """Corpus -> pretraining data folder (Parquet shards, manifest.json, data_card.md); returns the manifest.

    Settings are Google's flags; besides them: `per_word_replacement` (one 80/10/10 draw per
    whole word instead of per piece, a fix off by default), `dynamic_masking` (store
    unmasked pairs for a collator that masks each epoch), `shard_size_mb` and `num_workers`.
    """
    settings = DataSettings(
        max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions_per_seq, masked_lm_prob=masked_lm_prob,
        short_seq_prob=short_seq_prob, dupe_factor=dupe_factor, do_whole_word_mask=do_whole_word_mask,
        per_word_replacement=per_word_replacement, dynamic_masking=dynamic_masking, dev_fraction=dev_fraction, test_fraction=test_fraction, seed=seed,
        shard_size_mb=shard_size_mb,
    )
    settings.validate()
    with _worker_pool(num_workers) as pool:
        vocab = _load_vocab(vocab_uri)
        folder_existed = storage.is_s3(output_uri) or os.path.exists(output_uri)
        resumable = folder_existed and bool(storage.list_files(_work(output_uri, "done")))
        try:
            descriptors = plan_shards(corpus, output_uri, settings, corpus_settings)
        except BaseException:
            # Bad input: leave nothing behind (but keep an interrupted run's finished shards).
            if not resumable:
                _remove_tree(_work(output_uri))
            if not folder_existed and os.path.isdir(output_uri) and not os.listdir(output_uri):
                os.rmdir(output_uri)
            raise
        corpus_sha256 = corpus_fingerprint(descriptors)
        previous = _existing_manifest(output_uri)
        same_reading = previous and previous.get("corpus_reading", {}).get("settings") == asdict(corpus_settings)
        if same_reading and previous.get("settings") == asdict(settings) and previous.get("vocab_sha256") == vocab.info["sha256"] and previous.get("corpus_sha256") == corpus_sha256:
            log.info("%s already holds this data (same corpus, vocab and settings); reused", output_uri)
            _remove_tree(_work(output_uri))
            return previous
        if previous:
            storage.delete(storage.join(output_uri, instances.MANIFEST_FILE))
        records = _process_all(descriptors, vocab, output_uri, settings, pool, num_workers - 1)
    return merge_manifests(output_uri, records, corpus, vocab_uri, settings, corpus_sha256, tracking)
