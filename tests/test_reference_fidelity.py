"""Exactness against Google's own code (PyPI bert-tensorflow, run with a TensorFlow stand-in).

One shard, the same vocab, settings and seed: the instances must be identical to
Google's, in the same order: ids, segment split, masked positions and ids, NSP labels.
"""

from __future__ import annotations

import gzip

import pytest

from components.core import instances
from components.data.local import create_pretraining_data
from components.data.settings import DataSettings
from components.data.tokenization import CorpusTokenizer
from components.vocab.export import VocabSettings, export_vocab
from components.core.vocab_files import load_vocab_tokens

pytest.importorskip("bert", reason="Google's reference comes from bert-tensorflow==1.0.4 (the test extra)")
from tests import google_reference  # noqa: E402


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("vocab") / "vocab"
    export_vocab(str(folder), corpus="demo", settings=VocabSettings(vocab_size=5000))
    return str(folder)


@pytest.fixture(scope="module")
def demo_documents(tmp_path_factory) -> str:
    """A few hundred documents of the bundled demo corpus (Shakespeare, Austen, the Bible, the Jargon File)."""
    from components.core.corpus import demo_corpus_path

    text = gzip.open(demo_corpus_path(), "rt", encoding="utf-8").read()
    blocks = text.split("\n\n")
    path = tmp_path_factory.mktemp("corpus") / "demo-300.txt"
    path.write_text("\n\n".join(blocks[:200] + blocks[-100:]) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("max_seq_length", "max_predictions", "whole_word", "seed"),
    [(128, 20, False, 12345), (128, 20, True, 1), (512, 80, False, 2), (512, 80, True, 12345), (128, 20, True, 99)],
)
def test_instances_equal_googles(tmp_path, vocab, demo_documents, max_seq_length, max_predictions, whole_word, seed):
    settings = dict(max_seq_length=max_seq_length, max_predictions_per_seq=max_predictions, dupe_factor=2, seed=seed)
    out = str(tmp_path / "data")
    create_pretraining_data(
        demo_documents, vocab, out,
        settings=DataSettings(do_whole_word_mask=whole_word, dev_fraction=0, test_fraction=0, shard_size_mb=1000, **settings),
    )
    ours = instances.load_split(out, "train").to_pylist()
    theirs = google_reference.reference_instances(demo_documents, f"{vocab}/vocab.txt", whole_word_mask=whole_word, **settings)
    assert len(ours) == len(theirs) > 1000
    mismatch = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)
    assert mismatch is None, f"instance {mismatch} differs:\nours   {ours[mismatch]}\nGoogle {theirs[mismatch]}"


TRICKY_LINES = [
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u0130stanbul \u1e9e stra\u00dfe",  # accents, dotted I, sharp s
    "tab\there\u000bvertical\u000cfeed\u0085next\u2028line\u2029para\u00a0nbsp\u3000ideographic",  # control and space characters
    "zero\u200bwidth\u200djoiner\ufeffbom\u00adsoft\ufffdreplacement\x00nul",  # format characters, U+FFFD, NUL
    "\u4e2d\u6587\u5b57 mixed\u4e2dtext \U00020000 \U0002b820 \U0002b91f \uf900",  # CJK, incl. the range tokenizers spells differently
    "private\ue000use \U000f0000 unassigned\u0378x \ud7ff",  # private use, unassigned
    "\u03a3\u039f\u03a6\u039f\u03a3 \u039f\u0394\u039f\u03a3. \u0391\u0398\u0397\u039d\u0391",  # Greek, final sigma
    "x" * 150 + " " + "y" * 201 + " " + "supercalifragilistic" * 9,  # words of 150, 201 and 180 characters
    "[CLS] [SEP] [MASK] [UNK] [PAD] ##ing un##able",  # special tokens written in the text
    "\u201cCurly quotes\u201d \u2014 em dash \u2026 ellipsis \u00bfqu\u00e9? \u00abguillemets\u00bb",
    "\u0915\u094d\u0937 \u0e01\u0e34 \u05e9\u05b8\u05c1 \u0644\u0627 \u1100\u1161",  # combining marks in Indic, Thai, Hebrew, Arabic, Hangul jamo
    "\ufb01 ligature \u2460 circled \uff21 fullwidth \u2126 ohm \u212b angstrom",  # compatibility characters
    "   ",
    "",
]


@pytest.mark.parametrize("lowercase", [True, False])
def test_tokenizer_equals_googles_full_tokenizer(vocab, lowercase):
    base = load_vocab_tokens(vocab)
    tokens = base + [t for t in ("\u4e2d", "\u6587", "private", "caf", "##e", "\u03c3", "##\u03bf") if t not in base]
    vocab_file = f"{vocab}/../extended-{lowercase}.txt"
    with open(vocab_file, "w", encoding="utf-8") as handle:
        handle.write("\n".join(tokens) + "\n")
    ours = CorpusTokenizer(tokens, lowercase).tokenize_lines(TRICKY_LINES)
    theirs = google_reference.reference_tokenize(vocab_file, TRICKY_LINES, do_lower_case=lowercase)
    for line, a, b in zip(TRICKY_LINES, ours, theirs):
        assert a == b, f"line {line!r}"


def test_tokenizer_equals_googles_on_the_demo_corpus(vocab, demo_documents):
    lines = [line for line in open(demo_documents, encoding="utf-8").read().splitlines() if line.strip()]
    ours = CorpusTokenizer(load_vocab_tokens(vocab), True).tokenize_lines(lines)
    assert ours == google_reference.reference_tokenize(f"{vocab}/vocab.txt", lines)
