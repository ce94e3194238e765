"""The paired bootstrap: exact on degenerate inputs, seeded, and covering a known difference at about its level."""

import functools

import numpy as np
import pytest

from components.core.errors import BertpipeError
from components.evaluation.bootstrap import paired_bootstrap
from components.core.scoring import metrics_from
from components.evaluation.instance_results import compare


def synthetic(rng, instances: int, effect_sd: float = 1.0):
    """Two models on the same instances: a shared difficulty per instance, and a per-instance effect of
    model A (mean +0.3 logits) shared by all the masked tokens of that instance, as context would be."""
    tokens = rng.integers(1, 21, size=instances)
    difficulty = rng.normal(0.0, 1.0, size=instances)
    effect = rng.normal(0.3, effect_sd, size=instances)
    p_a, p_b = 1 / (1 + np.exp(-(difficulty + effect))), 1 / (1 + np.exp(-difficulty))
    return rng.binomial(tokens, p_a), rng.binomial(tokens, p_b), tokens, p_a, p_b


@functools.cache
def true_difference() -> float:
    """E[tokens * (p_a - p_b)] / E[tokens] of the synthetic problem, from two million instances."""
    _, _, tokens, p_a, p_b = synthetic(np.random.default_rng(2026), 2_000_000)
    return float((tokens * (p_a - p_b)).sum() / tokens.sum())


def test_identical_models_give_a_zero_width_interval_at_zero():
    hits = np.array([3, 0, 5, 2])
    interval = paired_bootstrap(hits, hits, np.array([5, 1, 9, 4]), resamples=200)
    assert (interval.difference, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert (interval.instances, interval.units, interval.resamples) == (4, 19, 200)


def test_the_observed_difference_is_exact_and_the_interval_is_seeded():
    rng = np.random.default_rng(1)
    a, b, tokens, _, _ = synthetic(rng, 500)
    first = paired_bootstrap(a, b, tokens, level=0.9, resamples=300, seed=7)
    assert first.difference == pytest.approx((a.sum() - b.sum()) / tokens.sum(), abs=1e-12)
    assert first == paired_bootstrap(a, b, tokens, level=0.9, resamples=300, seed=7)
    assert first != paired_bootstrap(a, b, tokens, level=0.9, resamples=300, seed=8)
    assert first.low < first.difference < first.high
    wider = paired_bootstrap(a, b, tokens, level=0.99, resamples=300, seed=7)
    assert wider.low < first.low and wider.high > first.high


def test_chunking_does_not_change_the_draws(monkeypatch):
    from components.evaluation import bootstrap

    a, b, tokens, _, _ = synthetic(np.random.default_rng(3), 400)
    whole = paired_bootstrap(a, b, tokens, resamples=100, seed=5)
    # The index matrix is drawn row by row from one generator, so any chunk size gives the same resamples.
    monkeypatch.setattr(bootstrap, "CHUNK_ELEMENTS", 400 * 7)
    assert paired_bootstrap(a, b, tokens, resamples=100, seed=5) == whole


def coverage(level: float, repetitions: int, per_token: bool) -> float:
    truth, covered = true_difference(), 0
    rng = np.random.default_rng(11)
    for repetition in range(repetitions):
        a, b, tokens, _, _ = synthetic(rng, 300)
        if per_token:  # the wrong way: every masked token its own unit, as if tokens were independent
            within = np.arange(tokens.sum()) - np.repeat(np.cumsum(tokens) - tokens, tokens)
            a, b = (within < np.repeat(x, tokens) for x in (a, b))
            tokens = np.ones(len(a))
        interval = paired_bootstrap(a, b, tokens, level=level, resamples=400, seed=repetition)
        covered += interval.low <= truth <= interval.high
    return covered / repetitions


def test_the_interval_covers_the_true_difference_at_about_its_level():
    # 300 repetitions: the binomial standard error of a 90% coverage is 1.7 points.
    assert 0.85 <= coverage(0.9, 300, per_token=False) <= 0.95


def test_resampling_tokens_instead_of_instances_undercovers():
    """Why instances are resampled: tokens of one instance share its effect, so token-level intervals are too narrow."""
    assert coverage(0.9, 100, per_token=True) < 0.75


def test_compare_signs_losses_so_positive_means_the_challenger_is_better():
    champion = {"masked": np.array([2, 3]), "mlm_hits": np.array([1, 1]), "mlm_top5_hits": np.array([2, 2]), "mlm_loss": np.array([4.0, 6.0]),
                "mask_tokens": np.array([1, 3]), "mask_token_hits": np.array([0, 1]), "nsp_hit": np.array([1, 0]), "nsp_loss": np.array([0.5, 0.9])}
    challenger = {**champion, "mlm_hits": np.array([2, 2]), "mlm_loss": np.array([3.0, 5.0]), "nsp_hit": np.array([0, 0])}
    assert compare(challenger, champion, "mlm_accuracy").difference == pytest.approx(2 / 5)
    assert compare(challenger, champion, "mlm_loss").difference == pytest.approx(2 / 5)  # 10/5 - 8/5: lower loss is better
    assert compare(challenger, champion, "nsp_accuracy").difference == pytest.approx(-1 / 2)
    assert metrics_from(challenger)["mlm_accuracy"] == pytest.approx(4 / 5)
    assert compare({**challenger, "mask_token_hits": np.array([1, 2])}, champion, "mlm_accuracy_at_mask").difference == pytest.approx(2 / 4)
    assert metrics_from(champion)["mlm_accuracy_at_mask"] == pytest.approx(1 / 4)
    with pytest.raises(BertpipeError, match="same instances"):
        compare({**challenger, "masked": np.array([3, 2])}, champion, "mlm_accuracy")
    with pytest.raises(BertpipeError, match="no per-instance interval for 'perplexity'"):
        compare(challenger, champion, "perplexity")


@pytest.mark.parametrize("kwargs,message", [
    (dict(level=1.0), "between 0 and 1"), (dict(resamples=0), "at least one resample"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(BertpipeError, match=message):
        paired_bootstrap(np.ones(3), np.ones(3), np.ones(3), **kwargs)


def test_mismatched_or_empty_inputs_are_refused():
    with pytest.raises(BertpipeError, match="same instances"):
        paired_bootstrap(np.ones(3), np.ones(4), np.ones(3))
    with pytest.raises(BertpipeError, match="no instances"):
        paired_bootstrap(np.zeros(0), np.zeros(0), np.zeros(0))
