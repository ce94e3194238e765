"""The last stage: sum the shard records into statistics, write data_card.md and, last, manifest.json.

The records are read from the work area (components.data.work), not handed over by the
shard tasks, so the merge's input does not grow with the number of shards.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from components.core import instances, storage
from components.core.corpus import CorpusCounts
from components.core.errors import BertpipeError
from components.core.settings import from_mapping
from components.core.tracking import Tracking, log_metrics, step_run
from components.data import statistics as data_statistics
from components.data.settings import STEP_NAME, DataSettings
from components.data.shard import fingerprint
from components.data.tokenization import MAX_INPUT_CHARS_PER_WORD
from components.data.work import CORPUS_FILE, done_uri, read_plan, remove_tree, shard_name, work_uri

log = logging.getLogger(__name__)


# A manifest's entry for one shard: where it is, what it holds, and what to check it against.
SHARD_ENTRY = ("path", "num_instances", "sha256", "num_bytes")


def _records(output_uri: str, plan: dict, settings: DataSettings) -> list[dict]:
    """Every planned shard's record, checked against the plan (a missing or stale one means a shard was not made)."""
    names = [shard_name(d["split"], d["index"]) for d in plan["shards"]]
    done = {uri.rsplit("/", 1)[-1] for uri in storage.list_files(work_uri(output_uri, "done"))}
    missing = [name for name in names if f"{name}.json" not in done]
    if missing:
        raise BertpipeError(f"{len(missing)} planned shards of {output_uri} were not made ({', '.join(missing[:3])}...); run their shard tasks again")
    with ThreadPoolExecutor(16) as pool:
        records = list(pool.map(storage.read_json, [done_uri(output_uri, name) for name in names]))
    expected = fingerprint(settings, plan["vocab"]["sha256"])
    for name, descriptor, record in zip(names, plan["shards"], records):
        if record.get("fingerprint") != expected or record.get("text_sha256") != descriptor["text_sha256"]:
            raise BertpipeError(f"shard {name} of {output_uri} was made with other settings, vocab or text than planned; run its shard task again")
    return records


def _corpus_reading(output_uri: str, records: list[dict]) -> dict:
    """The corpus format, its settings and counts from the planning pass; sentences come from the shards
    when they split the documents."""
    reading = storage.read_json(work_uri(output_uri, CORPUS_FILE))
    counts = CorpusCounts(**reading["counts"])
    if any(record.get("split_sentences") for record in records):
        counts.sentences = sum(record.get("sentences", 0) for record in records)
    return {**reading, "counts": counts.summary()}


def _manifest(plan: dict, settings: DataSettings, records: list[dict], corpus_reading: dict) -> dict:
    manifest = {
        "schema_version": instances.SCHEMA_VERSION,
        "max_seq_length": settings.max_seq_length,
        "vocab_sha256": plan["vocab"]["sha256"],
        "vocab_size": plan["vocab"]["size"],
        "lowercase": plan["vocab"]["lowercase"],
        "corpus": plan["corpus"],
        "corpus_sha256": plan["corpus_sha256"],
        "content_key": plan["content_key"],
        "settings": asdict(settings),  # in field order: the data card lists them so
        "corpus_reading": corpus_reading,
        "splits": {},
        "statistics": {},
    }
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
            "shards": [{key: r[key] for key in SHARD_ENTRY if key in r} for r in mine],  # num_bytes: not in records of older shards
        }
        manifest["statistics"][split] = summary
    return manifest


def _delete_stale_shards(output_uri: str, manifest: dict) -> None:
    """Shards of an earlier run that this manifest does not reference (say, it had more shards)."""
    referenced = {storage.join(output_uri, s["path"]) for split in manifest["splits"].values() for s in split["shards"]}
    for split in instances.SPLITS:
        split_uri = storage.join(output_uri, split)
        if storage.is_s3(output_uri) or os.path.isdir(split_uri):
            for stale in set(storage.list_files(split_uri)) - referenced:
                storage.delete(stale)


def warn_overlong_words(records: list[dict]) -> None:
    """A warning, not an error: Google's tokenizer makes such a word one [UNK] too, and one pasted blob should not
    stop a corpus; the count and an example say whether the corpus needs cleaning."""
    found = [record["overlong_words"] for record in records if record.get("overlong_words", {}).get("count")]
    if found:
        example = found[0]
        shown = example["example"] + ("…" if example["example_chars"] > len(example["example"]) else "")
        log.warning(
            "%d words longer than %d characters became one [UNK] each (first: %r, %d characters): not words but blobs "
            "(base64, URLs, markup)? clean the corpus if that is many", sum(f["count"] for f in found), MAX_INPUT_CHARS_PER_WORD,
            shown, example["example_chars"],
        )


def merge_pretraining_data(output_uri: str, tracking: Tracking | None = None) -> dict:
    """Stage 3 of create-pretraining-data: write the data card and then the manifest of `output_uri`; returns the manifest.

    Removes the work area and stale shards. With `tracking`, the settings and per-split
    statistics go to the step's MLflow run. When the plan kept existing data, returns its manifest (with "reused": True).
    """
    storage.check_output(output_uri)
    plan = read_plan(output_uri)
    if plan["reuse"]:
        remove_tree(work_uri(output_uri))
        return {**instances.read_manifest(output_uri), "reused": True}
    settings = from_mapping(DataSettings, plan["settings"])
    records = _records(output_uri, plan, settings)
    manifest = _manifest(plan, settings, records, _corpus_reading(output_uri, records))
    _delete_stale_shards(output_uri, manifest)
    storage.write_text(storage.join(output_uri, "data_card.md"), data_statistics.data_card(manifest))
    long_sentences = sum(summary["long_sentences"] for summary in manifest["statistics"].values())
    if long_sentences:
        log.warning(
            "%d sentences are longer than max_seq_length - 3 = %d tokens and get cut (Google's truncation); "
            "if that is many, check that the corpus has one sentence per line", long_sentences, settings.max_seq_length - 3,
        )
    warn_overlong_words(records)
    if tracking:
        reading = manifest["corpus_reading"]
        params = {"corpus": plan["corpus"], "vocab_uri": plan["vocab_uri"], "output_uri": output_uri, "corpus_format": reading["format"],
                  **asdict(settings), **{key: value for key, value in reading["settings"].items() if key != "corpus_format"}}
        with step_run(tracking, STEP_NAME, params):
            log_metrics({**data_statistics.metrics_for_mlflow(manifest["statistics"]), **data_statistics.corpus_metrics(reading["counts"])})
    storage.write_json(storage.join(output_uri, instances.MANIFEST_FILE), manifest)
    remove_tree(work_uri(output_uri))
    log.info(
        "pretraining data at %s: %s", output_uri,
        ", ".join(f"{split} {manifest['splits'][split]['num_instances']:,} instances" for split in instances.SPLITS),
    )
    return manifest
