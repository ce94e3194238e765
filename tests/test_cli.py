"""The `bertpipe` command: help that teaches, and one-line errors with exit status 2."""

import subprocess
import sys

import pytest

from pipelines.local_run import DEMO_SETTINGS


def bertpipe(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_every_step():
    result = bertpipe("--help")
    assert result.returncode == 0
    for command in ("run", "compile", "export-vocab", "create-pretraining-data", "train-phase", "evaluate", "register"):
        assert command in result.stdout


def test_run_help_shows_demo_defaults():
    result = bertpipe("run", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps help lines
    assert f"--phase1-steps PHASE1_STEPS phase 1 (128 tokens): optimizer steps in this phase (default: {DEMO_SETTINGS['phase1_steps']})" in text
    assert "phase 1 (128 tokens): peak learning rate, reached after the warmup (default: 0.0005)" in text
    assert "or 'demo': the bundled MiniLM checkpoint) instead of a fresh model_size preset; in the pipeline it seeds phase 128" in text
    assert "'demo' = the bundled public-domain corpus (default: demo)" in text


@pytest.fixture
def vocab_without_mask(tmp_path):
    folder = tmp_path / "nomask"
    folder.mkdir()
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    return str(folder)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "corpus not found: "),
        ("empty", "is empty"),
        ("nomask", "lacks [MASK]"),
    ],
)
def test_run_fails_at_once_with_one_line(tmp_path, vocab_without_mask, case, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    args = {
        "missing": ["--corpus", str(tmp_path / "no-such-corpus.txt")],
        "empty": ["--corpus", str(empty)],
        "nomask": ["--vocab-source", vocab_without_mask],
    }[case]
    result = bertpipe("run", "--artifact-root", str(tmp_path / "artifacts"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", *args, cwd=tmp_path)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bertpipe: error: ") and message in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "artifacts" / "runs").exists()
