"""The downstream probe: dataset formats and bad input, truncation, scores, and the champion that cannot be loaded."""

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.core.errors import BertpipeError
from components.core.tracking import Tracking
from components.evaluation.probe import ProbeSettings, probe, scores
from components.evaluation.probe_data import DEMO_PROBE_SET, load_labeled
from pipelines.cli import main
from tests.instance_factory import make_untrained_model

SPLIT = dict(text_column="text", label_column="label", split_column="split", test_fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> str:
    """A freshly initialised tiny model with the demo vocab and tokenizer files."""
    return make_untrained_model(tmp_path_factory.mktemp("probe"), vocab_size=2000, seed=0)


def write(tmp_path: Path, rows: list[dict], name: str) -> str:
    path = tmp_path / name
    table = pa.Table.from_pylist(rows)
    if name.endswith(".parquet"):
        pq.write_table(table, path)
    elif name.endswith(".csv"):
        import pyarrow.csv

        pyarrow.csv.write_csv(table, path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


ROWS = [{"text": f"{word} number {i}", "label": word, "split": "test" if i % 4 == 0 else "train"} for i in range(12) for word in ("cat", "dog")]


@pytest.mark.parametrize("name", ["set.csv", "set.jsonl", "set.parquet"])
def test_every_format_reads_the_same_splits(tmp_path, name):
    data = load_labeled(write(tmp_path, ROWS, name), **SPLIT)
    assert data.classes == ("cat", "dog")
    assert (len(data.train_texts), len(data.test_texts)) == (18, 6)
    assert data.test_texts[:2] == ["cat number 0", "dog number 0"] and list(data.test_labels[:2]) == [0, 1]


def test_without_a_split_column_a_seeded_fraction_is_held_out(tmp_path):
    uri = write(tmp_path, [{k: v for k, v in row.items() if k != "split"} for row in ROWS], "set.jsonl")
    first, again = load_labeled(uri, **SPLIT), load_labeled(uri, **SPLIT)
    assert len(first.test_texts) == 6 and first.test_texts == again.test_texts
    assert load_labeled(uri, **{**SPLIT, "seed": 1}).test_texts != first.test_texts


@pytest.mark.parametrize("rows,message", [
    ([{**row, "label": "cat"} for row in ROWS], r"has one class \('cat'\) in its training rows"),
    (ROWS + [{"text": "a bird", "label": "bird", "split": "test"}] * 2, "labels the training rows never show: 'bird' \\(2 rows\\)"),
    ([{**row, "split": "validation"} for row in ROWS], "must hold 'train' or 'test', not 'validation'"),
    ([{**row, "split": "train"} for row in ROWS], "24 training and 0 test rows"),
    (ROWS + [{"text": " ", "label": "cat", "split": "train"}], "1 rows have an empty text or no label"),
])
def test_bad_datasets_are_refused_with_what_to_fix(tmp_path, rows, message):
    with pytest.raises(BertpipeError, match=message):
        load_labeled(write(tmp_path, rows, "set.jsonl"), **SPLIT)


def test_missing_columns_and_unknown_formats_are_named(tmp_path):
    with pytest.raises(BertpipeError, match="has no column 'sentence'; its columns: text, label, split"):
        load_labeled(write(tmp_path, ROWS, "set.parquet"), **{**SPLIT, "text_column": "sentence"})
    with pytest.raises(BertpipeError, match="unknown format"):
        load_labeled(str(tmp_path / "set.xlsx"), **SPLIT)


def test_scores_match_a_hand_count():
    truth, predicted = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    # F1: class 0: 2*1/(2+2) = 0.5; class 1: 2*2/(2+3) = 0.8; class 2: 0.
    assert scores(truth, predicted, 3) == {"accuracy": 0.6, "macro_f1": pytest.approx((0.5 + 0.8 + 0.0) / 3)}


def test_the_shipped_set_is_balanced_split_by_document_and_small():
    table = pq.read_table(DEMO_PROBE_SET).to_pylist()
    assert Path(DEMO_PROBE_SET).stat().st_size < 200_000
    assert {label: sum(r["label"] == label for r in table) for label in ("shakespeare", "austen", "bible", "jargon")} == dict.fromkeys(
        ("shakespeare", "austen", "bible", "jargon"), 200)
    test_documents = {r["document"] for r in table if r["split"] == "test"}
    assert not test_documents & {r["document"] for r in table if r["split"] == "train"}
    assert all((r["document"] - 1) % 10 for r in table)  # none from the demo corpus the model trains on


def test_the_shipped_set_is_rebuilt_exactly_from_the_full_corpus():
    from tests.make_probe_set import FULL_CORPUS, build_rows

    if not FULL_CORPUS.is_file():
        pytest.skip(f"the full corpus is not at {FULL_CORPUS}")
    assert build_rows(str(FULL_CORPUS)) == pq.read_table(DEMO_PROBE_SET).to_pylist()


def test_long_texts_are_truncated_and_the_log_says_how_many(untrained, tmp_path, caplog):
    rows = [{"text": ("the king " * 300) if i < 3 else f"short {word} {i}", "label": word, "split": "test" if i % 3 == 0 else "train"}
            for i in range(9) for word in ("a", "b")]
    with caplog.at_level(logging.WARNING):
        result = probe(untrained, write(tmp_path, rows, "set.jsonl"), str(tmp_path / "out"), settings=ProbeSettings(max_length=1000))
    assert result["challenger"]["truncated"] == 6
    assert "6 of 18 texts are longer than 512 tokens and were truncated" in caplog.text  # capped at the model's positions


def test_probe_writes_its_results_and_the_cli_prints_them(untrained, tmp_path, capsys):
    rows_uri = write(tmp_path, ROWS, "set.csv")
    code = main(["probe", "--model-uri", untrained, "--dataset", rows_uri, "--output-uri", str(tmp_path / "out"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", "--fine-tune-steps", "2", "--batch-size", "4"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "out" / "probe.json").read_text())
    assert printed["classes"] == ["cat", "dog"] and printed["test_size"] == 6 and printed["majority_rate"] == 0.5
    assert len(printed["challenger"]["hits"]) == 6 and printed["challenger"]["fine_tuned"]["steps"] == 2
    assert printed["champion"] is None and printed["notes"] == []
    assert main(["probe", "--model-uri", untrained, "--output-uri", str(tmp_path / "o2"), "--pooling", "max"]) == 2
    assert "probe: pooling='max': must be one of mean, cls" in capsys.readouterr().err


def test_a_champion_that_cannot_be_loaded_is_left_out_and_the_result_says_so(untrained, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("broken")
    client.create_model_version("broken", source=str(tmp_path / "gone"))
    client.set_registered_model_alias("broken", "champion", "1")
    result = probe(untrained, write(tmp_path, ROWS, "set.csv"), str(tmp_path / "out"), registered_model_name="broken",
                   tracking=Tracking(uri, "probe-test"))
    assert result["champion_version"] == "1" and result["champion"] is None
    assert result["notes"][0].startswith("champion 1 could not be probed (") and result["notes"][0].endswith("deciding without its probe")
    assert result["challenger"]["accuracy"] >= 0.0
