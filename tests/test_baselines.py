"""Trivial baselines on the test split, and the promotion rule that a model must beat them."""

from collections import Counter


from components.core.baselines import baseline_key, floor_metrics, trivial_baselines
from components.core.instances import load_split, read_manifest
from components.core.vocab_files import mask_token_id
from components.registry.promotion import PromotionPolicy, decide, default_actor, pipeline_actor
from tests.instance_factory import make_data, make_vocab


def test_baselines_match_a_direct_count(tmp_path):
    vocab = make_vocab(str(tmp_path / "vocab"), vocab_size=300)
    data = make_data(str(tmp_path / "data"), vocab, max_seq_length=64, shards={"test": [25, 17]}, seed=4, eighty_ten_ten=True)
    rows = load_split(data, "test").to_pylist()
    mask_id = mask_token_id(vocab)
    labels = Counter(token for row in rows for token in row["masked_lm_ids"])
    at_mask = Counter(token for row in rows for position, token in zip(row["masked_lm_positions"], row["masked_lm_ids"]) if row["input_ids"][position] == mask_id)
    nsp = Counter(row["next_sentence_label"] for row in rows)
    got = trivial_baselines(data, read_manifest(data), "test", mask_id)
    assert got["most_frequent_token_accuracy"] == max(labels.values()) / sum(labels.values())
    assert got["most_frequent_token_accuracy_at_mask"] == max(at_mask.values()) / sum(at_mask.values())
    assert 0.7 < sum(at_mask.values()) / sum(labels.values()) < 0.9  # 80/10/10: the [MASK] positions are a subset
    assert got["majority_nsp_accuracy"] == max(nsp.values()) / len(rows)


def test_baseline_keys_follow_the_metric_and_length():
    assert baseline_key("mlm_accuracy_512") == "most_frequent_token_accuracy_512"
    assert baseline_key("nsp_accuracy_128") == "majority_nsp_accuracy_128"
    assert baseline_key("mlm_accuracy_at_mask_128") == "most_frequent_token_accuracy_at_mask_128"
    assert baseline_key("perplexity_512") is None
    assert floor_metrics("mlm_accuracy_512") == ("mlm_accuracy_512", "mlm_accuracy_at_mask_512")
    assert floor_metrics("nsp_accuracy_128") == ("nsp_accuracy_128",)


BASELINES = {"most_frequent_token_accuracy_512": 0.08, "majority_nsp_accuracy_512": 0.5}


def test_a_model_at_the_frequent_token_plateau_is_not_promoted():
    decision = decide({"mlm_accuracy_512": 0.08, "nsp_accuracy_512": 0.7, **BASELINES}, None)
    assert not decision.promote
    assert decision.reasons == ("mlm_accuracy_512 0.0800 does not beat the trivial baseline most_frequent_token_accuracy_512 0.0800",)


def test_a_model_that_only_copies_the_unchanged_tokens_is_not_promoted():
    # Right on the 10% of masked tokens left visible, the most frequent token elsewhere: above the first bar, not the second.
    copier = {"mlm_accuracy_512": 0.146, "mlm_accuracy_at_mask_512": 0.057, "most_frequent_token_accuracy_at_mask_512": 0.057, "nsp_accuracy_512": 0.7}
    decision = decide({**copier, **BASELINES}, None)
    assert not decision.promote
    assert decision.reasons == ("mlm_accuracy_at_mask_512 0.0570 does not beat the trivial baseline most_frequent_token_accuracy_at_mask_512 0.0570",)
    decision = decide({**copier, **BASELINES, "mlm_accuracy_at_mask_512": 0.09}, None)
    assert decision.promote and "mlm_accuracy_at_mask_512 0.0900 beats the trivial baseline 0.0570" in decision.reasons


def test_a_model_that_guesses_the_majority_nsp_class_is_not_promoted():
    decision = decide({"mlm_accuracy_512": 0.2, "nsp_accuracy_512": 0.49, **BASELINES}, None)
    assert not decision.promote and "majority_nsp_accuracy_512 0.5000" in decision.reasons[0]


def test_a_model_above_both_baselines_is_promoted_and_says_why():
    decision = decide({"mlm_accuracy_512": 0.15, "nsp_accuracy_512": 0.7, **BASELINES}, None)
    assert decision.promote
    assert "mlm_accuracy_512 0.1500 beats the trivial baseline 0.0800" in decision.reasons
    assert "nsp_accuracy_512 0.7000 beats the trivial baseline 0.5000" in decision.reasons


def test_the_baseline_rule_can_be_switched_off_and_needs_measured_baselines():
    plateau = {"mlm_accuracy_512": 0.08, "nsp_accuracy_512": 0.5, **BASELINES}
    assert decide(plateau, None, PromotionPolicy(beat_baselines=False)).promote
    assert decide({"mlm_accuracy_512": 0.08, "nsp_accuracy_512": 0.5}, None).promote  # older versions carry no baselines


def test_the_actor_is_never_unknown(monkeypatch):
    monkeypatch.delenv("USER", raising=False)
    monkeypatch.delenv("LOGNAME", raising=False)
    assert default_actor() not in ("", "unknown")
    assert pipeline_actor("run-7").startswith("pipeline run run-7 (")
    monkeypatch.setenv("USER", "ada")
    assert pipeline_actor("run-7") == "pipeline run run-7 (ada)" and pipeline_actor("") == "ada"
