"""Paired bootstrap confidence intervals for "challenger minus champion" on the same test instances.

Why instances and not tokens: the masked tokens of one instance share their
context (and whole-word masking masks the pieces of a word together), so their
hits are correlated; resampling tokens as if independent gives intervals that
are too narrow. Each resample draws n instances with replacement and computes,
for both models on the SAME draw (that is the pairing: the shared difficulty of
an instance cancels), the ratio sum(numerator) / sum(units) over the drawn
instances, e.g. masked-token hits over masked tokens. The interval is the
percentile interval of the resampled differences.

Vectorised: one (chunk x n) index matrix per chunk of resamples, gathered and
summed by numpy; 1,000 resamples of 50,000 instances (10^6 masked tokens) take
well under a second on one core (benchmarks/bench_bootstrap.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from components.core.errors import BertpipeError

CHUNK_ELEMENTS = 1 << 22  # indices drawn at once (32 MB of int64): bounded memory whatever n is


@dataclass(frozen=True)
class Interval:
    """The observed difference (a - b) and its bootstrap interval at `level`."""

    difference: float
    low: float
    high: float
    level: float
    instances: int
    units: int  # masked tokens (MLM metrics) or sequences (NSP metrics)
    resamples: int
    seed: int

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.difference:+.4f} [{self.low:+.4f}, {self.high:+.4f}] at {self.level:.0%} over {self.instances} instances ({self.units} units)"


def paired_bootstrap(numerator_a: np.ndarray, numerator_b: np.ndarray, units: np.ndarray, *, level: float = 0.95,
                     resamples: int = 1000, seed: int = 0) -> Interval:
    """Interval of sum(numerator_a)/sum(units) - sum(numerator_b)/sum(units), resampling instances (rows).

    numerator_a[i], numerator_b[i]: the two models' per-instance sums (hits, or losses);
    units[i]: what they are counted over (masked tokens, or 1 per sequence).
    """
    a, b, units = (np.asarray(x, dtype=np.float64) for x in (numerator_a, numerator_b, units))
    if not (a.shape == b.shape == units.shape and a.ndim == 1):
        raise BertpipeError(f"paired bootstrap needs per-instance arrays of one length (got {a.shape}, {b.shape}, {units.shape}); score both models on the same instances")
    if not 0 < level < 1:
        raise BertpipeError(f"confidence level {level} must be between 0 and 1")
    if resamples < 1:
        raise BertpipeError("the bootstrap needs at least one resample")
    n, total = len(units), units.sum()
    if n == 0 or total <= 0:
        raise BertpipeError("no instances to compare the models on")
    difference = a - b
    # Resampled sums in float32: half the memory traffic of the gathers (1.7x faster here), and a
    # relative error near 1e-7, far below any interval width that could matter.
    difference32, units32 = difference.astype(np.float32), units.astype(np.float32)
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_ELEMENTS // n)
    stats = np.empty(resamples)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        drawn = rng.integers(0, n, size=(rows, n))
        drawn_units = units32[drawn].sum(axis=1, dtype=np.float64)
        # A draw of only zero-unit instances (possible for tiny n) has no ratio; count it as no difference.
        stats[start:start + rows] = np.divide(difference32[drawn].sum(axis=1, dtype=np.float64), drawn_units, out=np.zeros(rows), where=drawn_units > 0)
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return Interval(float(difference.sum() / total), float(low), float(high), float(level), n, int(total), int(resamples), int(seed))
