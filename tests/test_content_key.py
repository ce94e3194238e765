"""Content keys: a listing fingerprint that changes when a corpus file does, and vocab and data folders reused only
when complete, verified and made from the same inputs and settings."""

import json
import logging
import os

import pytest


from components.core import storage
from components.core.content_key import cache_uri, input_fingerprints, source_fingerprint
from components.core.corpus import CorpusSettings
from components.data.local import create_pretraining_data
from components.data.reuse import data_key
from components.data.settings import DataSettings
from components.vocab.export import VocabSettings, export_vocab, vocab_key

TEXT = "".join(f"Document {i} has a first sentence here.\nAnd a second one about topic {i}.\n\n" for i in range(60))


def test_the_fingerprint_follows_each_file_not_the_spec(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text(TEXT)
    (folder / "b.txt").write_text(TEXT)
    first = source_fingerprint(str(folder))
    assert source_fingerprint(str(folder)) == first  # a second listing of the same files
    os.utime(folder / "b.txt", ns=(1, 1))
    assert source_fingerprint(str(folder)) != first  # rewritten (another modification time)
    assert source_fingerprint(str(folder / "*.txt")) != source_fingerprint(str(folder))  # another spec names the files
    assert source_fingerprint("bert-base-uncased") == source_fingerprint("bert-base-uncased") != source_fingerprint("bert-large-uncased")
    corpus, vocab = input_fingerprints(str(folder))
    assert corpus == vocab == source_fingerprint(str(folder))
    assert input_fingerprints(str(folder), "bert-base-uncased")[1] == source_fingerprint("bert-base-uncased")


def test_s3_objects_are_fingerprinted_by_size_and_etag(fresh_s3):
    storage.s3_client().create_bucket(Bucket="corpora")
    storage.write_text("s3://corpora/en/a.txt", TEXT)
    stamps = storage.file_stamps("s3://corpora/en")
    assert list(stamps) == ["s3://corpora/en/a.txt"]
    assert stamps["s3://corpora/en/a.txt"].split(":")[0] == str(len(TEXT))
    assert storage.file_sizes("s3://corpora/en") == {"s3://corpora/en/a.txt": len(TEXT)}  # what data reuse checks shards by
    first = source_fingerprint("s3://corpora/en")
    storage.write_text("s3://corpora/en/a.txt", TEXT.replace("topic", "TOPIC"))  # same size, other content: another ETag
    assert source_fingerprint("s3://corpora/en") != first


def test_every_setting_that_changes_the_output_changes_the_key():
    vocab = VocabSettings(vocab_size=500)
    assert vocab_key("", "demo", vocab, CorpusSettings(), "f") != vocab_key("", "demo", VocabSettings(vocab_size=600), CorpusSettings(), "f")
    assert vocab_key("", "demo", vocab, CorpusSettings(), "f") != vocab_key("", "demo", vocab, CorpusSettings(dedup=False), "f")
    assert vocab_key("", "demo", vocab, CorpusSettings(), "f") != vocab_key("", "demo", vocab, CorpusSettings(), "g")
    data = DataSettings()
    assert data_key("demo", "v", data, CorpusSettings(), "f") != data_key("demo", "v", DataSettings(dupe_factor=2), CorpusSettings(), "f")
    assert data_key("demo", "v", data, CorpusSettings(), "f") != data_key("demo", "w", data, CorpusSettings(), "f")
    assert cache_uri("s3://b/bert", "data-128", "abc") == "s3://b/bert/cache/data-128-abc"


def test_a_vocab_is_reused_only_when_complete_verified_and_made_the_same_way(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    uri = str(tmp_path / "vocab")
    made = export_vocab(uri, corpus=str(corpus), settings=VocabSettings(vocab_size=200))
    assert made["reused"] is False
    again = export_vocab(uri, corpus=str(corpus), settings=VocabSettings(vocab_size=200))
    assert again["reused"] is True and again["sha256"] == made["sha256"]
    assert "reused the vocab at" in caplog.text
    assert export_vocab(uri, corpus=str(corpus), settings=VocabSettings(vocab_size=150))["reused"] is False  # another setting
    export_vocab(uri, corpus=str(corpus), settings=VocabSettings(vocab_size=200))
    with open(f"{uri}/vocab.txt", "a") as handle:  # edited after publication: fails its checksum, made again
        handle.write("extra\n")
    assert export_vocab(uri, corpus=str(corpus), settings=VocabSettings(vocab_size=200))["reused"] is False
    os.remove(f"{uri}/{storage.PUBLISHED_FILE}")  # half-written (no manifest yet): made again
    assert export_vocab(uri, corpus=str(corpus), settings=VocabSettings(vocab_size=200))["reused"] is False


def test_data_is_reused_without_reading_the_corpus_only_while_every_shard_verifies(tmp_path, demo_vocab, caplog):
    caplog.set_level(logging.INFO)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    out = tmp_path / "data"
    settings = DataSettings(dev_fraction=0.1, test_fraction=0.1)
    first = create_pretraining_data(str(corpus), demo_vocab, str(out), settings=settings)
    assert len(first["content_key"]) == 20 and "reused" not in first
    manifest_bytes = (out / "manifest.json").read_bytes()
    assert create_pretraining_data(str(corpus), demo_vocab, str(out), settings=settings)["reused"] is True
    assert "reused the data at" in caplog.text and (out / "manifest.json").read_bytes() == manifest_bytes
    shard = out / first["splits"]["train"]["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes()[:-1])  # a damaged shard: planned and made again, the same bytes as before
    caplog.clear()
    assert "reused" not in create_pretraining_data(str(corpus), demo_vocab, str(out), settings=settings)
    assert "a shard is missing or not as written" in caplog.text
    assert json.loads((out / "manifest.json").read_text()) == json.loads(manifest_bytes)


DATA_SETTINGS = DataSettings(dev_fraction=0.1, test_fraction=0.1)


def make_data(tmp_path, vocab: str):
    """Make (or reuse) the data of TEXT under tmp_path/data; returns what create_pretraining_data returned."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    return create_pretraining_data(str(corpus), vocab, str(tmp_path / "data"), settings=DATA_SETTINGS)


def flip_a_byte(path) -> None:
    """The same size, other bytes: only a checksum can tell."""
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))


def test_reuse_reads_no_shard_and_a_reader_still_refuses_one_changed_at_its_size(tmp_path, demo_vocab, monkeypatch):
    from components.core import instances
    from components.core.errors import BertpipeError

    entry = make_data(tmp_path, demo_vocab)["splits"]["train"]["shards"][0]
    shard = tmp_path / "data" / entry["path"]
    assert entry["num_bytes"] == shard.stat().st_size
    flip_a_byte(shard)
    reading = storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda uri: pytest.fail(f"reuse read {uri}") if uri.endswith(".parquet") else reading(uri))
    assert make_data(tmp_path, demo_vocab)["reused"] is True
    monkeypatch.setattr(storage, "read_bytes", reading)
    with pytest.raises(BertpipeError, match="does not match its manifest checksum; .* delete its data folder"):
        instances.load_split(str(tmp_path / "data"), "train")


def test_data_made_before_shard_sizes_were_recorded_is_checked_by_its_checksums(tmp_path, demo_vocab, caplog):
    first = make_data(tmp_path, demo_vocab)
    for split in first["splits"].values():
        for entry in split["shards"]:
            del entry["num_bytes"]
    (tmp_path / "data" / "manifest.json").write_text(json.dumps(first))
    assert make_data(tmp_path, demo_vocab)["reused"] is True
    flip_a_byte(tmp_path / "data" / first["splits"]["train"]["shards"][0]["path"])
    caplog.set_level(logging.WARNING)
    assert "reused" not in make_data(tmp_path, demo_vocab)
    assert "a shard is missing or not as written" in caplog.text


def _make_data(corpus: str, vocab: str, out: str) -> str:
    """One of two racing processes: '' when it finished, else its one-line error."""
    from components.core.errors import BertpipeError

    try:
        create_pretraining_data(corpus, vocab, out, settings=DataSettings(dev_fraction=0.1, test_fraction=0.1, shard_size_mb=0.001))
    except BertpipeError as error:
        return str(error)
    return ""


def test_two_processes_writing_the_same_data_folder_leave_it_whole(tmp_path, demo_vocab):
    """Same key, same bytes: a race may fail one writer with a clear error, never leave a folder that verifies wrongly."""
    import multiprocessing

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 3)
    alone = create_pretraining_data(str(corpus), demo_vocab, str(tmp_path / "alone"), settings=DataSettings(dev_fraction=0.1, test_fraction=0.1, shard_size_mb=0.001))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        outcomes = pool.starmap(_make_data, [(str(corpus), demo_vocab, str(tmp_path / "shared"))] * 2)
    assert "" in outcomes, outcomes
    from components.data.reuse import verified_manifest

    manifest = verified_manifest(str(tmp_path / "shared"), alone["content_key"])
    assert manifest is not None and manifest["splits"] == alone["splits"]
