"""create-pretraining-data on one machine: plan, every shard, merge, with `num_workers` local processes.

The same three stages the pipeline runs as separate tasks (components.data.split, .shard,
.merge), so `bertpipe create-pretraining-data` and the pipeline make the same bytes. With N
workers this process and N - 1 spawned ones take shard names from one queue. Memory
grows with the shard size, not the corpus.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import os

from components.core import storage
from components.core.corpus import CorpusSettings
from components.core.errors import BertpipeError
from components.core.tracking import Tracking
from components.data.instance_creation import load_compiled
from components.data.merge import merge_pretraining_data
from components.data.settings import STEP_NAME, DataSettings
from components.data.shard import create_pretraining_shard
from components.data.split import plan_pretraining_data

log = logging.getLogger(__name__)


def _make_shards(output_uri: str, names: list[str], pool, pool_size: int) -> None:
    """Every planned shard; with a pool its workers and this process take shards from one queue."""
    from tqdm import tqdm

    queue = collections.deque(names)
    failures: list[BaseException] = []
    progress = tqdm(total=len(queue), desc="shards", unit="shard", disable=len(queue) < 2)

    def feed() -> None:  # give a worker the next shard when it is free (runs in the pool's result thread)
        try:
            name = queue.popleft()
        except IndexError:
            return
        pool.apply_async(create_pretraining_shard, (output_uri, name), callback=lambda _: (progress.update(), feed()), error_callback=failures.append)

    if pool is not None:
        for _ in range(pool_size):
            feed()
    while not failures:
        try:
            name = queue.popleft()
        except IndexError:
            break
        create_pretraining_shard(output_uri, name)
        progress.update()
    if pool is not None:
        pool.close()
        pool.join()
    progress.close()
    if failures:
        raise failures[0]


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


def create_pretraining_data(corpus: str, vocab_uri: str, output_uri: str, *, settings: DataSettings = DataSettings(),
                            corpus_settings: CorpusSettings = CorpusSettings(), num_workers: int = 1, tracking: Tracking | None = None) -> dict:
    """Corpus -> pretraining data folder (Parquet shards, manifest.json, data_card.md); returns the manifest.

    The corpus is read with `corpus_settings`. A folder that already holds this data (same corpus, vocab and settings) is kept as is; an
    interrupted run's finished shards are not redone. The output does not depend on `num_workers`.
    """
    if num_workers < 1:
        raise BertpipeError(f"{STEP_NAME}: num_workers={num_workers}: must be at least 1 (1 makes the shards in this process)")
    storage.check_output(output_uri)  # before the worker pool starts
    with _worker_pool(num_workers) as pool:
        names = plan_pretraining_data(corpus, vocab_uri, output_uri, settings, corpus_settings)
        _make_shards(output_uri, names, pool, num_workers - 1)
    return merge_pretraining_data(output_uri, tracking)
