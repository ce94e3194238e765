"""The promotion rule as settings (the register-and-promote step's) and as the policy `decide` applies.

Apart from the step, so the CLI builds its flags without loading MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.core.metric_names import HIGHER_IS_BETTER
from components.core.settings import setting


@dataclass(frozen=True)
class PromotionPolicy:
    """When a challenger replaces the champion (all thresholds in the metric's own units)."""

    metric: str = "mlm_accuracy_512"
    margin: float = 0.0  # the challenger must beat the champion by MORE than this
    guard_metric: str = "nsp_accuracy_512"
    guard_tolerance: float = 0.01  # the guard metric may drop by at most this
    floor: float = 0.0  # the metric must reach at least this, champion or not
    beat_baselines: bool = True  # metric (and its core.baselines.floor_metrics) and guard must beat their trivial baselines (clearly, given intervals), when measured
    probe_tolerance: float | None = None  # the probe's accuracy may drop by at most this (None: the probe does not decide)


PROMOTION_METRICS = tuple(f"{name}_{length}" for length in (128, 512) for name in HIGHER_IS_BETTER)


@dataclass(frozen=True)
class PromotionSettings:
    """The pipeline's promotion rule, as settings (the register-and-promote step's)."""

    promotion_metric: str = setting("mlm_accuracy_512", "metric the new model must improve to replace the champion (higher is better)", choices=PROMOTION_METRICS)
    # The interval covers test-set sampling only; another training seed alone moved MLM accuracy by up to a point
    # in tests/test_trusted_promotion.py's sweep, beyond the interval in 3 of 10 pairs: half a point refused them all.
    promotion_margin: float = setting(0.005, "how much the interval's lower bound must beat the champion by (strictly more than this); "
                                      "it guards against seed-to-seed noise, which the test-set interval does not cover", minimum=0.0, maximum=1.0)
    nsp_tolerance: float = setting(0.01, "how much NSP accuracy at 512 may drop at most on promotion", minimum=0.0, maximum=1.0)
    promotion_floor: float = setting(0.0, "the metric's minimum for any champion, the first one included", minimum=0.0, maximum=1.0)
    promotion_over_baseline: bool = setting(True, "the metric and NSP accuracy must also beat their trivial baselines (most frequent token, majority NSP label), "
                                           "by an interval above 0 where evaluation measured one; "
                                           "MLM accuracy also at the [MASK] positions alone, where copying the input scores nothing")
    promotion_dry_run: bool = setting(False, "decide and report, but move no alias")
    require_probe: bool = setting(False, "the downstream probe's accuracy must not drop by more than --probe-tolerance either")
    probe_tolerance: float = setting(0.01, "how much the probe's test accuracy may drop at most (with --require-probe)", minimum=0.0, maximum=1.0)

    @property
    def policy(self) -> "PromotionPolicy":
        return PromotionPolicy(metric=self.promotion_metric, margin=self.promotion_margin, guard_tolerance=self.nsp_tolerance, floor=self.promotion_floor,
                               beat_baselines=self.promotion_over_baseline,
                               probe_tolerance=self.probe_tolerance if self.require_probe else None)
