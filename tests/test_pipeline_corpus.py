"""`bertpipe run --corpus x.jsonl` end to end: a raw JSONL corpus and a probe dataset file through the whole local pipeline.

One kfp.local run on the TINY settings of test_pipeline_local: the data manifests count what the
corpus reading kept and dropped, the probe runs on a JSONL labeled set (required by the policy), and
the version it registers carries the probe's result in its tags and model card.
"""

import gzip
import io
import json
import re
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from components.core import storage
from components.core.corpus import demo_corpus_path
from pipelines.local_run import run_pipeline_locally
from tests.test_pipeline_local import TINY

PROBE_SET = Path(__file__).resolve().parents[1] / "components" / "demo_data" / "pd-demo-sources.parquet"  # tests/make_probe_set.py
PER_CLASS = 60


def write_raw_corpus(path: Path) -> None:
    """80 demo documents as raw text (sentences joined by spaces) in a 'text' field, 5 of them twice, one short and one empty."""
    documents = gzip.open(demo_corpus_path(), "rt", encoding="utf-8").read().split("\n\n")[:80]
    texts = [" ".join(document.split("\n")) for document in documents]
    texts += texts[10:15] + ["Too short.", ""]
    path.write_text("".join(json.dumps({"id": number, "text": text}) + "\n" for number, text in enumerate(texts)), encoding="utf-8")


def write_probe_set(path: Path) -> None:
    """The shipped source-classification set, PER_CLASS passages per source, as JSONL (text, label, split)."""
    rows, taken = [], {}
    for row in pq.read_table(PROBE_SET).to_pylist():
        if taken.get(row["label"], 0) < PER_CLASS:
            taken[row["label"]] = taken.get(row["label"], 0) + 1
            rows.append({"text": row["text"], "label": row["label"], "split": row["split"]})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def jsonl_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("jsonl-pipeline")
    write_raw_corpus(root / "corpus.jsonl")
    write_probe_set(root / "probe.jsonl")
    arguments = {
        **TINY,
        "corpus": str(root / "corpus.jsonl"),
        "probe_dataset": str(root / "probe.jsonl"),
        "require_probe": True,
        "artifact_root": str(root / "artifacts"),
        "tracking_uri": f"sqlite:///{root}/mlflow.db",
        "experiment": "jsonl-test",
        "registered_model_name": "jsonl-test",
    }
    outputs = run_pipeline_locally(arguments, str(root / "kfp-root"), stream=io.StringIO())
    return arguments, outputs


def test_the_data_manifests_count_what_the_raw_corpus_reading_kept(jsonl_run):
    arguments, _ = jsonl_run
    # Data folders are keyed by their content (reused across runs): this run made the only two.
    manifests = [storage.read_json(str(path)) for path in Path(arguments["artifact_root"]).rglob("manifest.json")]
    assert sorted(manifest["max_seq_length"] for manifest in manifests) == [128, 512]
    for manifest in manifests:
        reading = manifest["corpus_reading"]
        assert reading["format"] == "jsonl"
        assert {key: reading["counts"][key] for key in ("records", "empty", "short", "duplicates", "documents")} == {
            "records": 87, "empty": 1, "short": 1, "duplicates": 5, "documents": 80}
        assert reading["counts"]["sentences"] > 5 * 80  # split into sentences by the segmenter, not one per document
        assert sum(split["num_documents"] for split in manifest["splits"].values()) == 80
        assert manifest["splits"]["train"]["num_instances"] > 0 and manifest["splits"]["test"]["num_instances"] > 0


def test_the_run_registers_a_version_with_the_probe_in_its_tags_and_model_card(jsonl_run):
    arguments, outputs = jsonl_run
    assert outputs["model_version"] == "jsonl-test/1"
    version = mlflow.MlflowClient(arguments["tracking_uri"]).get_model_version("jsonl-test", "1")
    tags = version.tags
    assert tags["bertpipe.probe.dataset"] == arguments["probe_dataset"]
    accuracy = float(tags["bertpipe.probe.accuracy"])
    assert 0.25 < accuracy <= 1.0  # four balanced classes: chance is about 0.25
    assert 0.0 <= float(tags["bertpipe.probe.macro_f1"]) <= 1.0
    assert tags["bertpipe.promotion.decision"] in ("promoted", "kept")
    assert re.search(r"_(128|512) \d\.\d{4} vs trivial \d\.\d{4} \([+-]\d\.\d{4}, 95% interval \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]\)", tags["bertpipe.promotion.reasons"])
    card = (Path(outputs["model_uri"]).parent / "model_card.md").read_text()
    assert "Downstream probe on" in card and f"| new | {accuracy:.4f} |" in card
    assert card.startswith(version.description.split("\n\n… (cut")[0])  # the card is the version's description
