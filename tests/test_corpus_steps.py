"""Raw corpora through the steps: create-pretraining-data and export-vocab from JSONL, by every door, with counts."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import kfp.local
import mlflow
import pytest
from kfp import dsl

from components.core.corpus import CorpusSettings, demo_corpus_path
from components.core.errors import BertpipeError
from components.core.tracking import Tracking
from components.data.local import create_pretraining_data
from components.data.settings import DataSettings
from components.vocab.export import VocabSettings, export_vocab
from pipelines.cli import main

DATA = dict(max_seq_length=64, max_predictions_per_seq=10, dev_fraction=0.1, test_fraction=0.1, dupe_factor=1, seed=5, shard_size_mb=0.05)


@pytest.fixture(scope="module")
def raw_jsonl(tmp_path_factory) -> str:
    """80 documents of the demo corpus as raw text (sentences joined by spaces, in a 'body' field), 5 of them twice, and 2 short ones."""
    documents = gzip.open(demo_corpus_path(), "rt", encoding="utf-8").read().split("\n\n")[:80]
    texts = [" ".join(document.split("\n")) for document in documents]
    texts += texts[10:15] + ["Too short.", ""]
    path = tmp_path_factory.mktemp("raw") / "corpus.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"id": number, "body": text}) + "\n" for number, text in enumerate(texts))
    return str(path)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory, raw_jsonl) -> str:
    folder = str(tmp_path_factory.mktemp("vocab") / "vocab")
    export_vocab(folder, corpus=raw_jsonl, settings=VocabSettings(vocab_size=2000), corpus_settings=CorpusSettings(text_column="body"))
    return folder


def _digests(folder: str) -> dict[str, str]:
    files = sorted(p for p in Path(folder).rglob("*.parquet"))
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_data_from_jsonl_counts_and_is_independent_of_workers(tmp_path, raw_jsonl, vocab):
    reading = CorpusSettings(text_column="body")
    tracking = Tracking(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="corpus-test", pipeline_run_id="run-1")
    manifest = create_pretraining_data(raw_jsonl, vocab, str(tmp_path / "one"), settings=DataSettings(**DATA), corpus_settings=reading, tracking=tracking)
    create_pretraining_data(raw_jsonl, vocab, str(tmp_path / "two"), settings=DataSettings(**DATA), corpus_settings=reading, num_workers=2)
    assert len(manifest["splits"]["train"]["shards"]) > 2
    assert _digests(str(tmp_path / "one")) == _digests(str(tmp_path / "two")) != {}

    counts = manifest["corpus_reading"]["counts"]
    assert manifest["corpus_reading"]["format"] == "jsonl"
    assert {key: counts[key] for key in ("records", "empty", "short", "duplicates", "documents")} == {
        "records": 87, "empty": 1, "short": 1, "duplicates": 5, "documents": 80}
    assert sum(split["num_documents"] for split in manifest["splits"].values()) == 80
    assert counts["sentences"] > 5 * counts["documents"]  # split into sentences, not one per document
    card = (tmp_path / "one" / "data_card.md").read_text()
    assert "Format: jsonl." in card and "| Dropped: exact duplicates | 5 |" in card and "- text_column: body" in card
    run = mlflow.MlflowClient(tracking.tracking_uri).search_runs(
        [mlflow.get_experiment_by_name("corpus-test").experiment_id], filter_string="tags.`bertpipe.step` = 'create-pretraining-data'")[0]
    assert run.data.metrics["corpus/duplicates"] == 5 and run.data.metrics["corpus/sentences"] == counts["sentences"]
    assert run.data.params["text_column"] == "body" and run.data.params["corpus_format"] == "jsonl"


KFP_DATA = {**DATA, "shard_size_mb": 0.2}  # two train shards: few kfp.local tasks


@pytest.fixture(scope="module")
def library_data(tmp_path_factory, raw_jsonl, vocab) -> tuple[str, dict]:
    out = str(tmp_path_factory.mktemp("lib") / "data")
    return out, create_pretraining_data(raw_jsonl, vocab, out, settings=DataSettings(**KFP_DATA), corpus_settings=CorpusSettings(text_column="body"))


def test_the_cli_makes_the_same_bytes(tmp_path, raw_jsonl, vocab, library_data):
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in KFP_DATA.items()]
    assert main(["create-pretraining-data", "--corpus", raw_jsonl, "--vocab-uri", vocab, "--output-uri", str(tmp_path / "cli"),
                 "--text-column", "body", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", *flags]) == 0
    assert _digests(str(tmp_path / "cli")) == _digests(library_data[0])


def test_the_kfp_data_pipeline_makes_the_same_bytes(tmp_path, raw_jsonl, vocab, library_data):
    from pipelines.bert_pretraining import pretraining_data

    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp-root"))

    @dsl.pipeline(name="corpus-data")
    def alone():
        imported = dsl.importer(artifact_uri=vocab, artifact_class=dsl.Artifact, metadata={"uri": vocab}).output
        pretraining_data(vocab=imported, corpus=raw_jsonl, text_column="body", artifact_root=str(tmp_path / "artifacts"), fingerprint="",
                         tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="corpus-kfp", masked_lm_prob=0.15, short_seq_prob=0.1,
                         do_whole_word_mask=True, **KFP_DATA)

    alone()
    (kfp_out,) = (tmp_path / "artifacts" / "cache").glob("data-64-*")
    assert json.loads((kfp_out / "manifest.json").read_text())["corpus_reading"] == library_data[1]["corpus_reading"]
    assert _digests(str(kfp_out)) == _digests(library_data[0]) != {}


def test_cli_bad_input_is_one_line(tmp_path, vocab, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine, and long enough to be kept as a document."}\nnot json\n', encoding="utf-8")
    assert main(["export-vocab", "--corpus", str(bad), "--output-uri", str(tmp_path / "v"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # MLflow may log a line of its own before
    assert len(errors) == 1 and errors[0].startswith(f"bertpipe: error: {bad}: line 2 is not JSON (")
    assert not (tmp_path / "v").exists()
    assert main(["create-pretraining-data", "--corpus", str(bad), "--vocab-uri", vocab, "--output-uri", str(tmp_path / "d"),
                 "--skip-bad-records", "--min-document-chars", "0", "--dev-fraction", "0", "--test-fraction", "0",
                 "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 0
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["corpus_reading"]["counts"]["bad_records"] == 1 and manifest["corpus_reading"]["counts"]["documents"] == 1


def test_pipelines_take_every_corpus_setting():
    import dataclasses
    import inspect

    from pipelines.bert_pretraining import bert_pretraining, pretraining_data

    for pipeline in (bert_pretraining, pretraining_data):
        parameters = inspect.signature(pipeline.pipeline_func).parameters
        for field in dataclasses.fields(CorpusSettings):
            assert parameters[field.name].default == field.default, (pipeline.name, field.name)


def test_bertpipe_run_checks_the_corpus_as_the_steps_read_it(tmp_path, raw_jsonl):
    from pipelines.cli import build_parser
    from pipelines.local_run import preflight

    args = vars(build_parser().parse_args(["run", "--corpus", raw_jsonl, "--text-column", "body", "--min-document-chars", "20"]))
    preflight(args)  # the documents are in 'body'
    with pytest.raises(BertpipeError, match="no 'text' field"):
        preflight({**args, "text_column": "text"})
    with pytest.raises(BertpipeError, match="min_document_chars=-1: must be at least 0"):
        preflight({**args, "min_document_chars": -1})
