"""`bertpipe fill-mask`: the same guesses as Hugging Face's fill-mask pipeline, as a table or JSON, clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.core.console import QUIET_THIRD_PARTY
from components.core.errors import BertpipeError
from components.evaluation.fill_mask import fill_mask, format_table
from tests.instance_factory import make_untrained_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return Path(make_untrained_model(tmp_path_factory.mktemp("fill-mask"), vocab_size=1000, seed=5))


def test_guesses_match_hugging_face_fill_mask_pipeline(model_dir):
    from transformers import BertForMaskedLM, BertTokenizerFast, pipeline

    text = "the king [MASK] the queen and [MASK] left ."
    ours = fill_mask(text, str(model_dir), top_k=4)
    reference = pipeline("fill-mask", model=BertForMaskedLM.from_pretrained(str(model_dir)),
                         tokenizer=BertTokenizerFast.from_pretrained(str(model_dir)), top_k=4, device="cpu")(text)
    assert [mask["index"] for mask in ours["masks"]] == [1, 2]
    for mine, theirs in zip(ours["masks"], reference):
        assert [p["token"] for p in mine["predictions"]] == [p["token_str"].replace(" ", "") for p in theirs]
        assert [p["score"] for p in mine["predictions"]] == pytest.approx([p["score"] for p in theirs], abs=1e-5)
    assert ours["filled"].count("[MASK]") == 0


def test_table_has_a_row_per_rank_and_a_column_per_mask(model_dir):
    result = fill_mask("a [MASK] b [MASK] c", str(model_dir), top_k=3)
    lines = format_table(result).splitlines()
    header = next(line for line in lines if line.startswith("rank"))
    assert "[MASK] 1" in header and "[MASK] 2" in header
    rows = lines[lines.index(header) + 1:]
    assert [row.split()[0] for row in rows] == ["1", "2", "3"]
    assert rows[0].split()[1] == result["masks"][0]["predictions"][0]["token"]


def test_text_without_a_mask_is_refused(model_dir):
    with pytest.raises(BertpipeError, match="no \\[MASK\\]"):
        fill_mask("no mask here", str(model_dir))


def test_without_a_champion_the_default_model_says_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/empty.db")
    with pytest.raises(BertpipeError, match=r"no champion in sqlite:///.*empty\.db yet .* --model models:/bert-pretraining/VERSION"):
        fill_mask("the [MASK] of denmark")


def test_cli_prints_json_and_one_line_errors(model_dir):
    command = [sys.executable, "-m", "pipelines.cli", "fill-mask"]
    done = subprocess.run([*command, "the [MASK] of denmark", "--model", str(model_dir), "--top-k", "2", "--json"], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert len(result["masks"]) == 1 and len(result["masks"][0]["predictions"]) == 2
    failed = subprocess.run([*command, "the [MASK] of denmark", "--model", str(model_dir / "missing")], capture_output=True, text=True)
    assert failed.returncode == 2
    assert failed.stderr.strip().startswith("bertpipe: error:") and len(failed.stderr.strip().splitlines()) == 1


def test_a_registered_version_prints_only_its_table(model_dir, tmp_path):
    """No third-party noise around the answer: MLflow's download bar, transformers' "Loading weights" bar and its
    MISSING-keys report (the NSP head bertpipe restores itself) stay quiet unless the user asks for them."""
    from components.core.tracking import Tracking
    from components.registry.register import register_model

    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    register_model(str(model_dir), "quiet", tracking=Tracking(tracking_uri=tracking_uri, experiment="quiet"))
    environment = {name: value for name, value in os.environ.items() if name not in QUIET_THIRD_PARTY}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "fill-mask", "the [MASK] of denmark", "--model", "models:/quiet/1",
                           "--tracking-uri", tracking_uri], capture_output=True, text=True, check=True, env=environment)
    for noise in ("Downloading artifacts", "Loading weights", "LOAD REPORT", "MISSING", "Writing model shards"):
        assert noise not in done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "model: models:/quiet/1" and "rank  [MASK] 1" in done.stdout
