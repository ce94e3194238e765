import hashlib

import pytest

from components.core.errors import BertpipeError
from components.vocab.export import VocabSettings, export_vocab
from components.core.vocab_files import SPECIAL_TOKENS, load_vocab_info, load_vocab_tokens
from tests.instance_factory import load_tokenizer

BERT_BASE_UNCASED_VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"


def test_export_from_pretrained_model_keeps_the_exact_vocab(tmp_path, minilm_dir):
    info = export_vocab(str(tmp_path / "vocab"), source=str(minilm_dir))
    assert info["size"] == 30522 and info["lowercase"] is True
    assert info["sha256"] == BERT_BASE_UNCASED_VOCAB_SHA256
    assert (tmp_path / "vocab" / "vocab.txt").read_bytes() == (minilm_dir / "vocab.txt").read_bytes()
    tokenizer = load_tokenizer(str(tmp_path / "vocab"))
    assert tokenizer.tokenize("Unaffable Jargon") == ["una", "##ffa", "##ble", "jar", "##gon"]
    assert tokenizer.convert_tokens_to_ids("[MASK]") == 103


def test_trained_vocab_is_deterministic_and_complete(tmp_path, demo_vocab):
    again = export_vocab(str(tmp_path / "again"), corpus="demo", settings=VocabSettings(vocab_size=2000))
    info = load_vocab_info(demo_vocab)
    assert again["sha256"] == info["sha256"]
    tokens = load_vocab_tokens(demo_vocab)
    assert tokens[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert len(tokens) == 2000 and info["lowercase"] is True
    assert hashlib.sha256((tmp_path / "again" / "vocab.txt").read_bytes()).hexdigest() == info["sha256"]


def test_vocab_without_mask_is_refused_and_nothing_written(tmp_path):
    source = tmp_path / "broken"
    source.mkdir()
    (source / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"]) + "\n")
    with pytest.raises(BertpipeError, match=r"lacks \[MASK\]"):
        export_vocab(str(tmp_path / "out"), source=str(source))
    assert not (tmp_path / "out").exists()


def test_export_overwrites_an_existing_vocab_folder(tmp_path, demo_vocab):
    out = str(tmp_path / "vocab")
    export_vocab(out, corpus="demo", settings=VocabSettings(vocab_size=1000))
    info = export_vocab(out, corpus="demo", settings=VocabSettings(vocab_size=2000))
    assert info == {**load_vocab_info(out), "reused": False}  # another vocab_size: another content key, made anew
    assert len(load_vocab_tokens(out)) == 2000


def test_needs_a_source_or_a_corpus(tmp_path):
    with pytest.raises(BertpipeError, match="needs --source .* or --corpus"):
        export_vocab(str(tmp_path / "v"))


def test_an_edited_vocab_is_refused_on_read(tmp_path):
    out = tmp_path / "vocab"
    export_vocab(str(out), corpus="demo", settings=VocabSettings(vocab_size=1000))
    with open(out / "vocab.txt", "a", encoding="utf-8") as handle:
        handle.write("extra\n")
    with pytest.raises(BertpipeError, match="was changed after export"):
        load_vocab_tokens(str(out))
