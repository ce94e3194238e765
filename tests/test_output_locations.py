"""Output locations are checked when each step starts: a file in the way, a folder nobody can write, a missing bucket.

Every step here gets inputs that do not exist: the error naming the output (not the input) shows the
output was checked first, before the vocab is trained or the model is loaded.
"""

from __future__ import annotations

import pytest

from components.core import storage
from components.core.errors import BertpipeError
from components.data.local import create_pretraining_data
from components.data.merge import merge_pretraining_data
from components.data.shard import create_pretraining_shard
from components.data.split import plan_pretraining_data
from components.evaluation.evaluate import evaluate
from components.evaluation.probe import probe
from components.registry.step import register_and_promote
from components.training.phase import train_phase
from components.vocab.export import export_vocab

STEPS = {
    "export-vocab": lambda missing, out: export_vocab(out, corpus=missing),
    "plan": lambda missing, out: plan_pretraining_data(missing, missing, out),
    "shard": lambda missing, out: create_pretraining_shard(out, "train-00000"),
    "merge": lambda missing, out: merge_pretraining_data(out),
    "create-pretraining-data": lambda missing, out: create_pretraining_data(missing, missing, out),
    "train-phase": lambda missing, out: train_phase(missing, missing, out),
    "evaluate": lambda missing, out: evaluate(missing, {128: missing}, out),
    "probe": lambda missing, out: probe(missing, "demo", out),
}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default sqlite:///mlflow.db would land here, were it opened
    return tmp_path


@pytest.mark.parametrize("step", STEPS)
def test_every_step_refuses_a_file_as_its_output_before_reading_its_inputs(in_tmp, step):
    in_the_way = in_tmp / "notes.txt"
    in_the_way.write_text("keep me\n")
    with pytest.raises(BertpipeError) as error:
        STEPS[step](str(in_tmp / "missing"), str(in_the_way))
    assert str(error.value) == f"--output-uri {in_the_way} is a file, not a folder: pass a folder (an existing one or one to create)"
    assert in_the_way.read_text() == "keep me\n" and sorted(p.name for p in in_tmp.iterdir()) == ["notes.txt"]


def test_register_checks_the_report_folder_before_registering(in_tmp):
    (in_tmp / "notes.txt").write_text("keep me\n")
    with pytest.raises(BertpipeError, match=r"^the folder of --report-uri \S+/notes.txt is a file, not a folder: pass a folder"):
        register_and_promote(str(in_tmp / "missing"), str(in_tmp / "missing"), {128: str(in_tmp / "missing")}, registered_model_name="m",
                             report_uri=str(in_tmp / "notes.txt" / "report.md"))
    assert sorted(p.name for p in in_tmp.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("where, message", [
    ("/proc/bertpipe-vocab", "--output-uri /proc/bertpipe-vocab is not writable (No such file or directory in /proc): pass a folder you can write to"),
    ("notes.txt/vocab", "--output-uri notes.txt/vocab cannot be created: notes.txt is a file, not a folder"),
])
def test_unwritable_or_impossible_folders_fail_before_the_vocab_is_trained(in_tmp, where, message):
    (in_tmp / "notes.txt").write_text("keep me\n")
    with pytest.raises(BertpipeError) as error:
        export_vocab(where, corpus="demo")
    assert str(error.value) == message
    assert sorted(p.name for p in in_tmp.iterdir()) == ["notes.txt"]


def test_a_writable_new_folder_passes_and_nothing_is_left_behind(in_tmp):
    storage.check_output(str(in_tmp / "a" / "b"))
    storage.check_output(str(in_tmp))
    assert list(in_tmp.iterdir()) == []


def test_s3_missing_bucket_fails_before_the_vocab_is_trained_and_a_good_one_keeps_no_probe(fresh_s3, tmp_path):
    with pytest.raises(BertpipeError, match=r"^S3 bucket 'no-such-bucket' of s3://no-such-bucket/vocab does not exist at http://127\.0\.0\.1:\d+: create it or fix the URI$"):
        export_vocab("s3://no-such-bucket/vocab", corpus=str(tmp_path / "missing.txt"))
    good = f"s3://{fresh_s3.bucket}/runs/vocab"
    storage.check_output(good)
    assert storage.list_files(f"s3://{fresh_s3.bucket}") == []


def test_s3_refused_credentials_are_one_line_naming_the_output(fresh_s3, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(BertpipeError, match=r"^S3 at http://127\.0\.0\.1:\d+ refused the credentials for s3://\S+/vocab \(403\): check AWS_ACCESS_KEY_ID"):
        storage.check_output(f"s3://{fresh_s3.bucket}/vocab")
