"""The trainer's plain-torch BertForPreTraining against transformers' own: same parameters, outputs, dropout and files."""

import logging

import torch
import transformers

from components.core import bert, models
from tests.test_models import random_batch


def test_parameters_are_named_ordered_and_tied_as_in_transformers():
    torch.manual_seed(0)
    model = models.build_model("tiny", 700)
    reference = bert.to_transformers(model)
    assert [(name, p.shape) for name, p in model.named_parameters()] == [(name, p.shape) for name, p in reference.named_parameters()]
    assert list(model.state_dict()) == list(reference.state_dict())
    assert model.num_parameters() == reference.num_parameters() == 586_430
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias


def test_initialisation_follows_transformers_recipe():
    torch.manual_seed(0)
    model = models.build_model("mini", 5000)
    words = model.bert.embeddings.word_embeddings.weight
    assert torch.count_nonzero(words[0]) == 0  # [PAD]
    assert abs(words[1:].std().item() - 0.02) < 0.0005 and abs(words[1:].mean().item()) < 0.0005
    query = model.bert.encoder.layer[3].attention.self.query
    assert abs(query.weight.std().item() - 0.02) < 0.001 and torch.count_nonzero(query.bias) == 0
    norm = model.bert.encoder.layer[0].output.LayerNorm
    assert torch.equal(norm.weight, torch.ones(256)) and torch.count_nonzero(norm.bias) == 0
    assert torch.count_nonzero(model.cls.predictions.bias) == 0


def test_training_mode_outputs_equal_transformers_dropout_included():
    torch.manual_seed(2)
    model = models.build_model("tiny", 400).train()
    reference = bert.to_transformers(model).train()
    batch = random_batch(400, seed=2)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    torch.manual_seed(7)
    ours = model.bert(**inputs)
    torch.manual_seed(7)
    theirs = reference.bert(**inputs)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(ours.last_hidden_state[real], theirs.last_hidden_state[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.pooler_output, theirs.pooler_output, rtol=1e-5, atol=1e-5)


def test_saved_folder_loads_in_transformers_complete_and_equal(tmp_path, caplog):
    torch.manual_seed(3)
    model = models.build_model("tiny", 600).eval()
    model.save_pretrained(str(tmp_path / "m"))
    loaded, info = transformers.BertForPreTraining.from_pretrained(str(tmp_path / "m"), output_loading_info=True)
    assert {key: value for key, value in info.items() if value} == {}
    assert bert.BertConfig.of(loaded.config) == model.config
    assert loaded.cls.predictions.decoder.weight.data_ptr() == loaded.bert.embeddings.word_embeddings.weight.data_ptr()
    batch = random_batch(600, seed=3)
    with torch.no_grad():
        ours = models.MaskedPretrainingModel(model)(*(batch[k] for k in models.MODEL_INPUTS))
        theirs = models.MaskedPretrainingModel(loaded.eval())(*(batch[k] for k in models.MODEL_INPUTS))
    torch.testing.assert_close(ours, theirs)
    with caplog.at_level(logging.WARNING, logger="components.core.models"):
        twin = bert.from_transformers(models.load_model(str(tmp_path / "m")))
    assert caplog.text == ""
    for (name, a), (_, b) in zip(model.state_dict().items(), twin.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
