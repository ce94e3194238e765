"""Evaluation metrics checked against an independent computation with Hugging Face's full-vocab forward."""

import json
import math
from collections import Counter

import pytest
import torch

from components.core import models
from components.core import storage
from components.core.baselines import baseline_key
from components.core.errors import BertpipeError
from components.core.tracking import Tracking
from components.evaluation.evaluate import EvaluationSettings, evaluate
from components.core.instances import load_split
from components.core.scoring import metrics_from, score_instances
from components.core.vocab_files import mask_token_id
from tests.instance_factory import make_data, make_vocab


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    vocab = make_vocab(str(root / "vocab"), vocab_size=1000)
    data = {
        64: make_data(str(root / "data64"), vocab, max_seq_length=64, shards={"test": [20, 15]}, seed=1),
        128: make_data(str(root / "data128"), vocab, max_seq_length=128, shards={"test": [30]}, seed=2),
    }
    torch.manual_seed(3)
    model_dir = root / "model"
    models.build_model("tiny", 1000).save_pretrained(str(model_dir))
    storage.download_dir(vocab, model_dir)
    return root, str(model_dir), data


def reference_metrics(model_dir: str, data_uri: str) -> dict:
    """Metrics from HF's BertForPreTraining over all positions, one instance at a time."""
    model = models.load_model(model_dir).eval()
    table = load_split(data_uri, "test").to_pylist()
    mask_id = mask_token_id(model_dir)
    losses, top1, top5, at_mask, nsp_losses, nsp_hits = [], [], [], [], [], []
    with torch.no_grad():
        for row in table:
            ids = torch.tensor([row["input_ids"]])
            types = torch.tensor([[0] * row["segment_a_length"] + [1] * (len(row["input_ids"]) - row["segment_a_length"])])
            out = model(input_ids=ids, token_type_ids=types, attention_mask=torch.ones_like(ids))
            for position, label in zip(row["masked_lm_positions"], row["masked_lm_ids"]):
                logits = out.prediction_logits[0, position]
                losses.append(-torch.log_softmax(logits, -1)[label].item())
                ranked = logits.argsort(descending=True)
                top1.append(ranked[0].item() == label)
                top5.append(label in ranked[:5].tolist())
                if row["input_ids"][position] == mask_id:
                    at_mask.append(top1[-1])
            nsp = out.seq_relationship_logits[0]
            nsp_losses.append(-torch.log_softmax(nsp, -1)[row["next_sentence_label"]].item())
            nsp_hits.append(nsp.argmax().item() == row["next_sentence_label"])
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {
        "mlm_loss": mean(losses), "mlm_accuracy": mean(top1), "mlm_accuracy_at_mask": mean(at_mask), "mlm_top5_accuracy": mean(top5),
        "nsp_loss": mean(nsp_losses), "nsp_accuracy": mean(nsp_hits),
    }


def test_metrics_match_an_independent_computation(setup):
    root, model_dir, data = setup
    metrics = evaluate(model_dir, data, str(root / "eval"), settings=EvaluationSettings(per_device_eval_batch_size=8))["metrics"]
    for length in (64, 128):
        expected = reference_metrics(model_dir, data[length])
        for name, value in expected.items():
            assert metrics[f"{name}_{length}"] == pytest.approx(value, rel=1e-4, abs=1e-6), (name, length)
        assert metrics[f"perplexity_{length}"] == pytest.approx(math.exp(expected["mlm_loss"]), rel=1e-4)
        assert metrics[f"loss_{length}"] == pytest.approx(expected["mlm_loss"] + expected["nsp_loss"], rel=1e-4)
    written = json.loads((root / "eval" / "metrics.json").read_text())
    assert written["metrics"] == metrics and written["split"] == "test" and written["champion"] is None
    assert {length: entry["uri"] for length, entry in written["data"].items()} == {"64": data[64], "128": data[128]}
    report = (root / "eval" / "report.md").read_text()
    assert "## max_seq_length 64" in report and "## max_seq_length 128" in report and "| mlm_accuracy |" in report
    assert report.count("\n- `[CLS]") == 10


class FixedGuesses(torch.nn.Module):
    """A stand-in model whose top guess at the k-th masked token is guesses[k], and NSP always 0."""

    def __init__(self, guesses: list[int], vocab_size: int = 16):
        super().__init__()
        self.logits = torch.nn.functional.one_hot(torch.tensor(guesses), vocab_size).float()

    def forward(self, input_ids, attention_mask, token_type_ids, mlm_batch_index, mlm_positions):
        return self.logits, torch.tensor([[1.0, 0.0]] * input_ids.shape[0])


def test_accuracy_at_mask_counts_only_the_positions_shown_as_mask():
    mask = 4
    batch = {  # row 0: [MASK] (truth 10), kept 7, [MASK] (truth 11); row 1: random 9 for 12, [MASK] (truth 10)
        "input_ids": torch.tensor([[2, mask, 7, mask, 3], [2, 9, mask, 8, 3]]), "attention_mask": torch.ones(2, 5, dtype=torch.long),
        "token_type_ids": torch.zeros(2, 5, dtype=torch.long), "mlm_batch_index": torch.tensor([0, 0, 0, 1, 1]),
        "mlm_positions": torch.tensor([1, 2, 3, 1, 2]), "mlm_labels": torch.tensor([10, 7, 11, 12, 10]), "next_sentence_label": torch.tensor([0, 1]),
    }
    # Right at the first [MASK], the kept token (copied) and the random one; wrong at the other two [MASK]s.
    results = score_instances(FixedGuesses([10, 7, 5, 12, 13]), [batch], torch.device("cpu"), mask)
    assert results["mask_tokens"].tolist() == [2, 1] and results["mask_token_hits"].tolist() == [1, 0]
    assert results["mlm_hits"].tolist() == [2, 1] and results["masked"].tolist() == [3, 2]
    metrics = metrics_from(results)
    assert (metrics["mlm_accuracy"], metrics["mlm_accuracy_at_mask"], metrics["nsp_accuracy"]) == (3 / 5, 1 / 3, 1 / 2)
    no_mask = score_instances(FixedGuesses([10, 7, 5, 12, 13]), [batch], torch.device("cpu"), 15)
    assert math.isnan(metrics_from(no_mask)["mlm_accuracy_at_mask"])  # no [MASK] shown: nothing to measure, not a perfect score


def test_baseline_intervals_pair_the_model_with_the_trivial_guesses_on_the_rows_it_scored(setup):
    root, model_dir, data = setup
    # Shards of 20 and 15 rows, batches of 8: four batches are 8 + 8 + 4 rows of the first shard and 8 of the second.
    record = evaluate(model_dir, {64: data[64]}, str(root / "eval-capped"), settings=EvaluationSettings(per_device_eval_batch_size=8, max_eval_batches=4))
    rows = load_split(data[64], "test").to_pylist()[:28]
    labels = Counter(token for row in rows for token in row["masked_lm_ids"])
    nsp = Counter(row["next_sentence_label"] for row in rows)
    metrics, intervals = record["metrics"], record["baseline_intervals"]
    assert (metrics["most_frequent_token_accuracy_64"], metrics["majority_nsp_accuracy_64"]) == (max(labels.values()) / sum(labels.values()), max(nsp.values()) / 28)
    assert sorted(intervals) == ["mlm_accuracy_64", "mlm_accuracy_at_mask_64", "nsp_accuracy_64"]
    assert {name: (i["instances"], i["units"], i["level"], i["resamples"]) for name, i in intervals.items()} == {
        "mlm_accuracy_64": (28, sum(labels.values()), 0.95, 1000), "mlm_accuracy_at_mask_64": (28, sum(labels.values()), 0.95, 1000),
        "nsp_accuracy_64": (28, 28, 0.95, 1000)}  # the factory shows [MASK] at every masked position
    for name, interval in intervals.items():
        assert interval["difference"] == pytest.approx(metrics[name] - metrics[baseline_key(name)], abs=1e-12), name
        assert interval["low"] <= interval["difference"] <= interval["high"]
    assert json.loads((root / "eval-capped" / "metrics.json").read_text())["baseline_intervals"] == intervals


def test_batch_size_does_not_change_metrics(setup):
    root, model_dir, data = setup
    one = evaluate(model_dir, {64: data[64]}, str(root / "eval1"), settings=EvaluationSettings(per_device_eval_batch_size=1))["metrics"]
    many = evaluate(model_dir, {64: data[64]}, str(root / "eval2"), settings=EvaluationSettings(per_device_eval_batch_size=64))["metrics"]
    assert one == pytest.approx(many, rel=1e-5)


def test_refuses_mismatched_data_and_registry_uris(setup, tmp_path):
    root, model_dir, data = setup
    with pytest.raises(BertpipeError, match="made with max_seq_length 64, expected 128"):
        evaluate(model_dir, {128: data[64]}, str(tmp_path / "e"))
    other_vocab = make_vocab(str(tmp_path / "vocab"), vocab_size=900)
    other = make_data(str(tmp_path / "other"), other_vocab, max_seq_length=64, shards={"test": [4]})
    with pytest.raises(BertpipeError, match="made with another vocab"):
        evaluate(model_dir, {64: other}, str(tmp_path / "e"))
    with pytest.raises(BertpipeError, match="has no vocab_info.json"):
        evaluate(str(tmp_path), {64: data[64]}, str(tmp_path / "e"))
    with pytest.raises(BertpipeError, match="has no 'dev' instances"):
        evaluate(model_dir, {"64": data[64]}, str(tmp_path / "e"), settings=EvaluationSettings(split="dev"))
    with pytest.raises(BertpipeError, match="split='validation': must be one of dev, test"):
        evaluate(model_dir, {64: data[64]}, str(tmp_path / "e"), settings=EvaluationSettings(split="validation"))
    with pytest.raises(BertpipeError, match="keyed by max_seq_length"):
        evaluate(model_dir, {"short": data[64]}, str(tmp_path / "e"))
    with pytest.raises(BertpipeError, match="bert"):
        evaluate("models:/bert@champion", {64: data[64]}, str(tmp_path / "e"), tracking=Tracking(f"sqlite:///{tmp_path}/mlflow.db"))


def test_a_champion_that_cannot_be_loaded_is_left_out_and_the_evaluation_says_so(setup, tmp_path):
    import mlflow

    root, model_dir, data = setup
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model("broken")
    client.create_model_version("broken", source=str(tmp_path / "gone"))
    client.set_registered_model_alias("broken", "champion", "1")
    record = evaluate(model_dir, {64: data[64]}, str(tmp_path / "eval"), registered_model_name="broken", tracking=Tracking(uri, "evaluate-test"))
    champion = record["champion"]
    assert (champion["version"], champion["metrics"], record["intervals"]) == ("1", None, {})
    assert champion["note"].startswith("Champion version 1 cannot be evaluated on this data (") and champion["note"].endswith("its registered metrics will be used.")
    assert champion["note"] in (tmp_path / "eval" / "report.md").read_text()
    assert not (tmp_path / "eval" / "champion").exists() and record["metrics"]["mlm_accuracy_64"] >= 0


def test_examples_join_word_pieces_but_not_onto_special_tokens():
    from components.evaluation.report import detokenize

    assert detokenize(["[CLS]", "##trimony", "was", "her", "ob", "##ject", "[SEP]", "##s", "[MASK]", "[SEP]"]) == \
        "[CLS] ##trimony was her object [SEP] ##s [MASK] [SEP]"
