"""Trivial baselines on the test split, and the promotion rule that a model must beat them (clearly, given an interval)."""

from collections import Counter

from components.core import instances
from components.core.baselines import baseline_key, baseline_rates, floor_metrics, trivial_guesses
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
    got = baseline_rates(trivial_guesses(data, read_manifest(data), "test", mask_id))
    assert got["most_frequent_token_accuracy"] == max(labels.values()) / sum(labels.values())
    assert got["most_frequent_token_accuracy_at_mask"] == max(at_mask.values()) / sum(at_mask.values())
    assert 0.7 < sum(at_mask.values()) / sum(labels.values()) < 0.9  # 80/10/10: the [MASK] positions are a subset
    assert got["majority_nsp_accuracy"] == max(nsp.values()) / len(rows)


MASK = 4
HAND_BUILT = [  # (input_ids, masked positions, their labels, NSP label); shown at the masked positions: [MASK] unless noted
    ([1, MASK, MASK, 2], [1, 2], [8, 8], 0),
    ([1, 7, MASK, 7, 2], [1, 2, 3], [7, 7, 7], 1),  # 7 kept at 1 and 3
    ([1, MASK, 2, 7, 2], [1, 3], [8, 7], 0),  # 7 kept at 3
    ([1, MASK, 5, 2], [1, 2], [9, 7], 0),  # a random 5 for 7 at 2
]


def hand_built_split(folder) -> dict:
    """HAND_BUILT as the test split of two shards in `folder`; returns its manifest. 7 is the most frequent masked
    token (5 of 9), 8 the most frequent at [MASK] (3 of 5), 0 the majority NSP label (3 of 4)."""
    shards = []
    for index, rows in enumerate((HAND_BUILT[:2], HAND_BUILT[2:])):
        columns = {"input_ids": [r[0] for r in rows], "segment_a_length": [2] * len(rows), "masked_lm_positions": [r[1] for r in rows],
                   "masked_lm_ids": [r[2] for r in rows], "next_sentence_label": [r[3] for r in rows]}
        path = instances.shard_path("test", index)
        shards.append({"path": path, **instances.write_shard(f"{folder}/{path}", columns)})
    return {"splits": {"test": {"shards": shards}}}


def test_trivial_guesses_per_instance_on_a_hand_built_split(tmp_path):
    data, manifest = str(tmp_path), hand_built_split(tmp_path)
    guesses = trivial_guesses(data, manifest, "test", MASK)
    assert {name: column.tolist() for name, column in guesses.items()} == {
        "masked": [2, 3, 2, 2], "mlm_hits": [0, 3, 1, 1], "mask_tokens": [2, 1, 1, 1], "mask_token_hits": [2, 0, 1, 0], "nsp_hit": [1, 0, 1, 1]}
    assert baseline_rates(guesses) == {"most_frequent_token_accuracy": 5 / 9, "most_frequent_token_accuracy_at_mask": 3 / 5, "majority_nsp_accuracy": 3 / 4}
    # Capped to the first rows (as max_eval_batches caps evaluation), only those count, and the guesses are fitted on them.
    assert {name: column.tolist() for name, column in trivial_guesses(data, manifest, "test", MASK, rows=3).items()} == {
        "masked": [2, 3, 2], "mlm_hits": [0, 3, 1], "mask_tokens": [2, 1, 1], "mask_token_hits": [2, 0, 1], "nsp_hit": [1, 0, 1]}
    assert trivial_guesses(data, manifest, "test", MASK, rows=1)["mlm_hits"].tolist() == [2]  # row 0 alone: 8 is its most frequent token


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
    assert decision.reasons == ("mlm_accuracy_512 0.0800 vs trivial 0.0800 (+0.0000, no interval): not above",)


def test_a_model_that_only_copies_the_unchanged_tokens_is_not_promoted():
    # Right on the 10% of masked tokens left visible, the most frequent token elsewhere: above the first bar, not the second.
    copier = {"mlm_accuracy_512": 0.146, "mlm_accuracy_at_mask_512": 0.057, "most_frequent_token_accuracy_at_mask_512": 0.057, "nsp_accuracy_512": 0.7}
    decision = decide({**copier, **BASELINES}, None)
    assert not decision.promote
    assert decision.reasons == ("mlm_accuracy_at_mask_512 0.0570 vs trivial 0.0570 (+0.0000, no interval): not above",)
    decision = decide({**copier, **BASELINES, "mlm_accuracy_at_mask_512": 0.09}, None)
    assert decision.promote and "mlm_accuracy_at_mask_512 0.0900 vs trivial 0.0570 (+0.0330, no interval): above" in decision.reasons


def test_a_model_that_guesses_the_majority_nsp_class_is_not_promoted():
    decision = decide({"mlm_accuracy_512": 0.2, "nsp_accuracy_512": 0.49, **BASELINES}, None)
    assert decision.reasons == ("nsp_accuracy_512 0.4900 vs trivial 0.5000 (-0.0100, no interval): not above",)


def test_a_model_above_both_baselines_is_promoted_and_says_why():
    decision = decide({"mlm_accuracy_512": 0.15, "nsp_accuracy_512": 0.7, **BASELINES}, None)
    assert decision.promote
    assert "mlm_accuracy_512 0.1500 vs trivial 0.0800 (+0.0700, no interval): above" in decision.reasons
    assert "nsp_accuracy_512 0.7000 vs trivial 0.5000 (+0.2000, no interval): above" in decision.reasons


# The demo model: learned NSP, but at [MASK] 0.0603 against the most frequent token's 0.0585 on ~2,000 masked tokens.
DEMO = {"mlm_accuracy_512": 0.1291, "mlm_accuracy_at_mask_512": 0.0603, "nsp_accuracy_512": 0.6814, "most_frequent_token_accuracy_512": 0.0597,
        "most_frequent_token_accuracy_at_mask_512": 0.0585, "majority_nsp_accuracy_512": 0.5752}


def interval(difference: float, low: float, high: float) -> dict:
    return {"difference": difference, "low": low, "high": high, "level": 0.95, "instances": 113, "units": 2000, "resamples": 1000, "seed": 0}


CLEAR = {"mlm_accuracy_512": interval(0.0694, 0.0610, 0.0780), "nsp_accuracy_512": interval(0.1062, 0.0442, 0.1681)}


def test_a_point_gain_inside_the_noise_is_refused_with_its_interval():
    noisy = {**CLEAR, "mlm_accuracy_at_mask_512": interval(0.0018, -0.0040, 0.0075)}
    decision = decide(DEMO, None, baseline_intervals=noisy)
    assert not decision.promote
    assert decision.reasons == ("mlm_accuracy_at_mask_512 0.0603 vs trivial 0.0585 (+0.0018, 95% interval [-0.0040, +0.0075]): not clearly above",)
    at_zero = {**CLEAR, "mlm_accuracy_at_mask_512": interval(0.0018, 0.0, 0.0075)}  # a lower bound of exactly 0 is not above 0
    assert not decide(DEMO, None, baseline_intervals=at_zero).promote


def test_a_clear_winner_over_every_baseline_is_promoted_and_says_so():
    clear = {**CLEAR, "mlm_accuracy_at_mask_512": interval(0.0318, 0.0210, 0.0431)}
    decision = decide({**DEMO, "mlm_accuracy_at_mask_512": 0.0903}, None, baseline_intervals=clear)
    assert decision.promote
    assert decision.reasons == (
        "no champion yet",
        "mlm_accuracy_512 0.1291 vs trivial 0.0597 (+0.0694, 95% interval [+0.0610, +0.0780]): clearly above",
        "mlm_accuracy_at_mask_512 0.0903 vs trivial 0.0585 (+0.0318, 95% interval [+0.0210, +0.0431]): clearly above",
        "nsp_accuracy_512 0.6814 vs trivial 0.5752 (+0.1062, 95% interval [+0.0442, +0.1681]): clearly above",
    )


def test_without_baseline_intervals_an_old_record_decides_by_the_point_values():
    decision = decide(DEMO, None)  # metrics.json from before baseline_intervals
    assert decision.promote
    assert "mlm_accuracy_at_mask_512 0.0603 vs trivial 0.0585 (+0.0018, no interval): above" in decision.reasons
    # A metric the evaluation gave no interval for (no [MASK] positions, say) falls back to its point value too.
    assert "mlm_accuracy_at_mask_512 0.0603 vs trivial 0.0585 (+0.0018, no interval): above" in decide(DEMO, None, baseline_intervals=CLEAR).reasons


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
