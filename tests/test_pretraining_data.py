"""create-pretraining-data: invariants, exact values, determinism, splits, sharding, resume and bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from components.core import instances
from components.core.errors import BertpipeError
from components.data.local import create_pretraining_data
from components.data.settings import DataSettings
from components.data.shard import create_pretraining_shard
from components.data.split import document_split, plan_pretraining_data, plan_shards
from components.vocab.export import VocabSettings, export_vocab
from components.core.vocab_files import load_vocab_tokens

SMALL = dict(dev_fraction=0.0, test_fraction=0.0, dupe_factor=2, seed=3)


def create(corpus: str, vocab: str, out: str, *, num_workers: int = 1, tracking=None, **settings) -> dict:
    return create_pretraining_data(corpus, vocab, out, settings=DataSettings(**settings), num_workers=num_workers, tracking=tracking)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("vocab") / "vocab"
    export_vocab(str(folder), corpus="demo", settings=VocabSettings(vocab_size=3000))
    return str(folder)


def _corpus(path: Path, documents: list[list[str]]) -> str:
    path.write_text("\n\n".join("\n".join(lines) for lines in documents) + "\n", encoding="utf-8")
    return str(path)


HAND_MADE = [
    ["The king is dead.", "Long live the king!", "He rode to the castle at dawn.", "The gates were open."],
    ["In the beginning was the word.", "And the word was with God."],
    ["Emma Woodhouse, handsome, clever, and rich, seemed to unite some of the best blessings of existence.",
     "She had lived nearly twenty-one years in the world with very little to distress or vex her."],
    ["A hacker is a person who enjoys exploring the details of programmable systems.", "The jargon file says so.",
     "Hackers stretch their capabilities.", "Most programmers prefer to learn only the minimum necessary."],
]


@pytest.fixture(scope="module")
def demo_slice(tmp_path_factory) -> str:
    """The first 120 documents of the bundled demo corpus."""
    from components.core.corpus import demo_corpus_path

    text = gzip.open(demo_corpus_path(), "rt", encoding="utf-8").read()
    path = tmp_path_factory.mktemp("corpus") / "slice.txt"
    path.write_text("\n\n".join(text.split("\n\n")[:120]) + "\n", encoding="utf-8")
    return str(path)


def test_hand_made_corpus_exact_values_and_invariants(tmp_path, vocab):
    corpus = _corpus(tmp_path / "c.txt", HAND_MADE)
    out = str(tmp_path / "data")
    manifest = create(corpus, vocab, out, max_seq_length=32, max_predictions_per_seq=5, **SMALL)
    rows = instances.load_split(out, "train").to_pylist()
    tokens = load_vocab_tokens(vocab)
    ids = {t: i for i, t in enumerate(tokens)}
    cls, sep, mask = ids["[CLS]"], ids["[SEP]"], ids["[MASK]"]

    assert manifest["splits"]["train"]["num_instances"] == len(rows) == 14
    assert manifest["splits"]["train"]["num_documents"] == 4
    assert sum(r["next_sentence_label"] for r in rows) == 7
    for row in rows:
        input_ids, a_len = row["input_ids"], row["segment_a_length"]
        assert len(input_ids) <= 32
        assert input_ids[0] == cls and input_ids[a_len - 1] == sep and input_ids[-1] == sep
        assert a_len >= 3 and len(input_ids) - a_len >= 2  # A and B are never empty
        positions = row["masked_lm_positions"]
        assert positions == sorted(set(positions)) and 1 <= len(positions) <= 5
        assert all(p not in (0, a_len - 1, len(input_ids) - 1) for p in positions)
        assert all(i not in (cls, sep) for i in row["masked_lm_ids"])
        # Outside the masked positions the ids are the original tokens: no [MASK] anywhere else.
        assert all(t != mask for p, t in enumerate(input_ids) if p not in positions)
    stats = manifest["statistics"]["train"]
    assert stats["instances"] == 14
    assert stats["masked_per_instance"] == pytest.approx(sum(len(r["masked_lm_positions"]) for r in rows) / 14)
    assert stats["mask_token_fraction"] + stats["random_token_fraction"] + stats["kept_token_fraction"] == pytest.approx(1.0)
    assert stats["random_next_fraction"] == pytest.approx(7 / 14)
    assert "| Instances | 14 | 0 | 0 |" in Path(out, "data_card.md").read_text()


def test_masked_ids_are_the_original_tokens(tmp_path, vocab, demo_slice):
    """At masked positions the row holds [MASK] (80%), the original id (10%) or a random id (10%)."""
    out = str(tmp_path / "data")
    create(demo_slice, vocab, out, max_seq_length=64, max_predictions_per_seq=10, **SMALL)
    rows = instances.load_split(out, "train").to_pylist()
    tokens = load_vocab_tokens(vocab)
    mask = tokens.index("[MASK]")
    kept = replaced = 0
    for row in rows:
        for position, original in zip(row["masked_lm_positions"], row["masked_lm_ids"]):
            current = row["input_ids"][position]
            kept += current == original
            replaced += current not in (original, mask)
    total = sum(len(r["masked_lm_positions"]) for r in rows)
    # 80/10/10: kept and random-replaced are each about a tenth (a random id can equal the original).
    assert 0.06 < kept / total < 0.14 and 0.06 < replaced / total < 0.14


def _digests(folder: str) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_deterministic_bytes_and_independent_of_workers(tmp_path, vocab, demo_slice):
    settings = dict(max_seq_length=64, max_predictions_per_seq=10, dev_fraction=0.1, test_fraction=0.1, dupe_factor=1, shard_size_mb=0.05)
    first = create(demo_slice, vocab, str(tmp_path / "a"), **settings)
    create(demo_slice, vocab, str(tmp_path / "b"), **settings, num_workers=2)
    assert len(first["splits"]["train"]["shards"]) > 2
    assert _digests(str(tmp_path / "a")) == _digests(str(tmp_path / "b"))
    assert not Path(tmp_path / "a", ".work").exists()


def test_dev_and_test_documents_are_the_same_for_128_and_512(tmp_path, vocab, demo_slice):
    settings = dict(dev_fraction=0.1, test_fraction=0.1, shard_size_mb=1000)
    by_length = {}
    for length in (128, 512):
        descriptors = plan_shards(demo_slice, str(tmp_path / str(length)), DataSettings(max_seq_length=length, **settings))
        by_length[length] = {d["split"]: d["text_sha256"] for d in descriptors}
    assert by_length[128] == by_length[512]
    assert set(by_length[128]) == {"train", "dev", "test"}
    # A document's split depends on its text alone.
    assert document_split(["Same text."], 0.1, 0.1) == document_split(["Same text."], 0.1, 0.1)


def test_splits_are_disjoint(tmp_path, vocab, demo_slice):
    descriptors = plan_shards(demo_slice, str(tmp_path / "d"), DataSettings(dev_fraction=0.1, test_fraction=0.1))
    texts = {}
    for d in descriptors:
        text = gzip.decompress(Path(d["documents_uri"]).read_bytes()).decode()
        texts[d["split"]] = {block for block in text.split("\n\n") if block}
    assert not texts["train"] & texts["dev"] and not texts["train"] & texts["test"] and not texts["dev"] & texts["test"]
    assert sum(len(t) for t in texts.values()) == 120


def test_dev_and_test_are_made_once_per_document_whatever_the_dupe_factor(tmp_path, vocab, demo_slice):
    settings = dict(max_seq_length=64, max_predictions_per_seq=10, dev_fraction=0.1, test_fraction=0.1, seed=3)
    once = create(demo_slice, vocab, str(tmp_path / "once"), dupe_factor=1, **settings)
    thrice = create(demo_slice, vocab, str(tmp_path / "thrice"), dupe_factor=3, **settings)
    for split in ("dev", "test"):
        assert thrice["splits"][split]["num_instances"] == once["splits"][split]["num_instances"] > 0
        assert instances.load_split(str(tmp_path / "thrice"), split).num_rows == once["splits"][split]["num_instances"]
        paths = [shard["path"] for shard in once["splits"][split]["shards"]]
        assert [_digests(str(tmp_path / "thrice"))[p] for p in paths] == [_digests(str(tmp_path / "once"))[p] for p in paths]
    # The train split still gets its three passes (each draws its own target lengths, so about 3x, not exactly).
    assert 2.7 <= thrice["splits"]["train"]["num_instances"] / once["splits"]["train"]["num_instances"] <= 3.3


def test_rerun_reuses_matching_data_and_rewrites_otherwise(tmp_path, vocab, demo_slice, caplog):
    out = str(tmp_path / "data")
    create(demo_slice, vocab, out, max_seq_length=64, **SMALL)
    manifest_mtime = Path(out, "manifest.json").stat().st_mtime_ns
    with caplog.at_level("INFO"):
        create(demo_slice, vocab, out, max_seq_length=64, **SMALL)
    assert "reused" in caplog.text and Path(out, "manifest.json").stat().st_mtime_ns == manifest_mtime
    changed = create(demo_slice, vocab, out, max_seq_length=64, **{**SMALL, "seed": 4})
    assert changed["settings"]["seed"] == 4
    assert instances.load_split(out, "train").num_rows == changed["splits"]["train"]["num_instances"]


def test_resume_skips_finished_shards(tmp_path, vocab, demo_slice, caplog):
    out = str(tmp_path / "data")
    settings = DataSettings(max_seq_length=64, dev_fraction=0, test_fraction=0, shard_size_mb=0.05)
    names = plan_pretraining_data(demo_slice, vocab, out, settings)
    create_pretraining_shard(out, names[0])  # an interrupted run finished shard 0 only
    with caplog.at_level("INFO"):
        resumed = create(demo_slice, vocab, out, max_seq_length=64, dev_fraction=0, test_fraction=0, shard_size_mb=0.05)
    assert "train-00000 already done" in caplog.text and "train-00001 already done" not in caplog.text
    fresh = create(demo_slice, vocab, str(tmp_path / "fresh"), max_seq_length=64, dev_fraction=0, test_fraction=0, shard_size_mb=0.05)
    assert resumed["splits"] == fresh["splits"]


def _assert_fails_cleanly(tmp_path, corpus, vocab, match, **kwargs):
    out = tmp_path / "out"
    with pytest.raises(BertpipeError, match=match):
        create(corpus, vocab, str(out), **kwargs)
    assert not out.exists()


def test_empty_corpus(tmp_path, vocab):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n\n  \n", encoding="utf-8")
    _assert_fails_cleanly(tmp_path, str(corpus), vocab, "no documents")


def test_non_utf8_corpus(tmp_path, vocab):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("Caf\u00e9 au lait.\n".encode("latin-1"))
    _assert_fails_cleanly(tmp_path, str(corpus), vocab, "not valid UTF-8")


def test_vocab_without_special_tokens(tmp_path, demo_slice):
    bad = tmp_path / "badvocab"
    bad.mkdir()
    (bad / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\n", encoding="utf-8")
    sha256 = hashlib.sha256((bad / "vocab.txt").read_bytes()).hexdigest()  # as exported: only the special tokens are wrong
    (bad / "vocab_info.json").write_text(json.dumps({"lowercase": True, "size": 3, "sha256": sha256, "source": "test"}))
    _assert_fails_cleanly(tmp_path, demo_slice, str(bad), r"lacks \[CLS\], \[SEP\], \[MASK\]")


def test_fraction_that_leaves_a_split_empty(tmp_path, vocab):
    corpus = _corpus(tmp_path / "c.txt", HAND_MADE[:2])
    _assert_fails_cleanly(tmp_path, corpus, vocab, "dev split got no documents", dev_fraction=0.01, test_fraction=0.0)


def test_bad_settings(tmp_path, vocab, demo_slice):
    _assert_fails_cleanly(tmp_path, demo_slice, vocab, "dupe_factor", dupe_factor=0)
    _assert_fails_cleanly(tmp_path, demo_slice, vocab, "leave documents", dev_fraction=0.5, test_fraction=0.5)


def test_warnings_for_one_document_and_far_max_predictions(tmp_path, vocab, caplog):
    corpus = _corpus(tmp_path / "one.txt", [[line for doc in HAND_MADE for line in doc]])
    with caplog.at_level("WARNING"):
        create(corpus, vocab, str(tmp_path / "o"), max_seq_length=128, max_predictions_per_seq=5, dev_fraction=0, test_fraction=0)
    assert "ONE document" in caplog.text and "far from masked_lm_prob" in caplog.text


def test_statistics_are_logged_to_mlflow(tmp_path, vocab):
    import mlflow

    from components.core.tracking import Tracking

    corpus = _corpus(tmp_path / "c.txt", HAND_MADE)
    tracking = Tracking(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="data-test", pipeline_run_id="run-1")
    manifest = create(corpus, vocab, str(tmp_path / "data"), max_seq_length=32, max_predictions_per_seq=5, tracking=tracking, **SMALL)
    run = mlflow.MlflowClient(tracking.tracking_uri).search_runs(
        [mlflow.get_experiment_by_name("data-test").experiment_id], filter_string="tags.`bertpipe.step` = 'create-pretraining-data'"
    )[0]
    assert run.data.metrics["train/instances"] == manifest["splits"]["train"]["num_instances"] == 14
    assert run.data.metrics["train/random_next_fraction"] == pytest.approx(0.5)
    assert run.data.params["max_seq_length"] == "32"


def test_dynamic_masking_stores_unmasked_pairs(tmp_path, vocab):
    corpus = _corpus(tmp_path / "c.txt", HAND_MADE)
    out = str(tmp_path / "data")
    manifest = create(corpus, vocab, out, max_seq_length=32, dynamic_masking=True, **SMALL)
    rows = instances.load_split(out, "train").to_pylist()
    mask = load_vocab_tokens(vocab).index("[MASK]")
    assert manifest["settings"]["dynamic_masking"] is True and len(rows) > 5
    assert all(not r["masked_lm_positions"] and mask not in r["input_ids"] for r in rows)


def test_long_sentences_are_reported(tmp_path, vocab, caplog):
    corpus = _corpus(tmp_path / "c.txt", [["word " * 40, "Short one."], ["Another short one.", "And more."]])
    with caplog.at_level("WARNING"):
        manifest = create(corpus, vocab, str(tmp_path / "d"), max_seq_length=16, max_predictions_per_seq=3, **SMALL)
    assert "1 sentences are longer than max_seq_length - 3 = 13 tokens" in caplog.text
    assert manifest["statistics"]["train"]["long_sentences"] == 1
    assert manifest["statistics"]["train"]["length_max"] == 16


def test_a_corpus_that_is_one_document_says_so_not_raise_the_fraction(tmp_path, vocab):
    corpus = _corpus(tmp_path / "one.txt", [[line for doc in HAND_MADE for line in doc]])
    out = tmp_path / "out"
    with pytest.raises(BertpipeError) as error:
        create(corpus, vocab, str(out), dev_fraction=0.02, test_fraction=0.02)
    assert str(error.value) == (f"corpus {corpus} is ONE document (documents are separated by blank lines), so the dev split gets none: "
                                "split it into documents, or set --dev-fraction 0 --test-fraction 0")
    assert not out.exists()


def test_a_megabyte_word_is_counted_and_shown_cut_short(tmp_path, vocab, caplog):
    blob = "q" * 1_000_000
    corpus = _corpus(tmp_path / "c.txt", [*HAND_MADE, [f"The {blob} is not a word.", f"Nor is {'z' * 300}, twice {'z' * 300}."]])
    with caplog.at_level("WARNING"):
        create(corpus, vocab, str(tmp_path / "d"), max_seq_length=32, max_predictions_per_seq=5, **SMALL)
    assert (f"3 words longer than 200 characters became one [UNK] each (first: '{'q' * 40}…', 1000000 characters)") in caplog.text
    assert blob[:41] not in caplog.text


def test_no_warning_for_long_runs_that_are_many_words(tmp_path, vocab, caplog):
    corpus = _corpus(tmp_path / "c.txt", [*HAND_MADE, [",".join(["word"] * 100) + "."]])
    with caplog.at_level("WARNING"):
        create(corpus, vocab, str(tmp_path / "d"), max_seq_length=32, max_predictions_per_seq=5, **SMALL)
    assert "[UNK] each" not in caplog.text


def test_num_workers_zero_is_refused_and_the_help_says_why(tmp_path, vocab):
    from pipelines.parameters import help_for

    _assert_fails_cleanly(tmp_path, _corpus(tmp_path / "c.txt", HAND_MADE), vocab, r"num_workers=0: must be at least 1 \(1 makes the shards in this process\)",
                          num_workers=0)
    assert "at least 1 (1 = in this process" in help_for("num_workers")
