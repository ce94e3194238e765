"""The work area of a data folder, `.work/`: what the plan hands the shard tasks, and they the merge.

    .work/plan.json             corpus, vocab, data and corpus settings, corpus fingerprint, one descriptor per shard
    .work/corpus.json           what the planning pass read: corpus format, its settings, its counts
    .work/docs/{shard}.txt.gz   each shard's raw documents
    .work/done/{shard}.json     each finished shard's record (path, checksum, statistics)

Tasks hand each other only shard names ("train-00012"); the rest is read from here, so no
task's input grows with the corpus. The merge removes the area once the manifest is written.
"""

from __future__ import annotations

import shutil

from components.core import storage
from components.core.errors import BertpipeError

WORK_DIR = ".work"
PLAN_FILE = "plan.json"
CORPUS_FILE = "corpus.json"


def work_uri(output_uri: str, *parts: str) -> str:
    return storage.join(output_uri, WORK_DIR, *parts)


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


def done_uri(output_uri: str, shard: str) -> str:
    return work_uri(output_uri, "done", f"{shard}.json")


def write_plan(output_uri: str, plan: dict) -> None:
    storage.write_json(work_uri(output_uri, PLAN_FILE), plan)


def read_plan(output_uri: str) -> dict:
    uri = work_uri(output_uri, PLAN_FILE)
    if not storage.exists(uri):
        raise BertpipeError(f"{output_uri} has no shard plan ({WORK_DIR}/{PLAN_FILE}); plan the data first (its plan-shards task)")
    return storage.read_json(uri)


def remove_tree(uri: str) -> None:
    """Delete a folder or S3 prefix (the work area, stale shards of an earlier run)."""
    if not storage.is_s3(uri):
        shutil.rmtree(uri, ignore_errors=True)
        return
    for file_uri in storage.list_files(uri):
        storage.delete(file_uri)
