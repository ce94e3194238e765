"""The paired bootstrap of a masked-LM accuracy difference: bootstrap.paired_bootstrap vs scipy.stats.bootstrap.

Both resample instances (paired, percentile interval, same number of resamples)
of a synthetic test split with 10^6 masked tokens (50,000 instances of 1-39
tokens). scipy is given its vectorised statistic too, so the comparison is
numpy against numpy; scipy's default batch size is used. Prints medians of
interleaved runs, the ratio and each side's peak traced memory (tracemalloc,
which numpy reports to). Usage: python benchmarks/bench_bootstrap.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np
from scipy import stats

from components.evaluation.bootstrap import paired_bootstrap


def problem(instances: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 40, size=instances)
    difficulty = rng.uniform(0.05, 0.6, size=instances)
    return rng.binomial(tokens, np.minimum(difficulty + 0.01, 1.0)), rng.binomial(tokens, difficulty), tokens


def ours(a, b, tokens, resamples):
    interval = paired_bootstrap(a, b, tokens, level=0.95, resamples=resamples, seed=0)
    return interval.low, interval.high


def with_scipy(a, b, tokens, resamples):
    def statistic(x, y, units, axis=-1):
        return (x.sum(axis=axis) - y.sum(axis=axis)) / units.sum(axis=axis)

    result = stats.bootstrap((a, b, tokens), statistic, paired=True, vectorized=True, n_resamples=resamples,
                             confidence_level=0.95, method="percentile", random_state=np.random.default_rng(0))
    return result.confidence_interval.low, result.confidence_interval.high


def measure(function, *args) -> tuple[float, float, tuple]:
    tracemalloc.start()
    started = time.perf_counter()
    interval = function(*args)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak / 2**20, interval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--instances", type=int, default=50_000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    a, b, tokens = problem(args.instances)
    print(f"{args.instances} instances, {tokens.sum()} masked tokens, {args.resamples} resamples; observed difference {(a.sum() - b.sum()) / tokens.sum():+.5f}")
    figures = {"bertpipe": [], "scipy": []}
    for _ in range(args.runs):  # interleaved, so a noisy moment hits both sides
        for name, function in (("bertpipe", ours), ("scipy", with_scipy)):
            figures[name].append(measure(function, a, b, tokens, args.resamples))
    for name, runs in figures.items():
        seconds = statistics.median(run[0] for run in runs)
        low, high = runs[0][2]
        print(f"{name:9s} median {seconds:.3f} s (runs: {', '.join(f'{r[0]:.3f}' for r in runs)}), peak {max(r[1] for r in runs):.0f} MB, interval [{low:+.5f}, {high:+.5f}]")
    ratio = statistics.median(r[0] for r in figures["scipy"]) / statistics.median(r[0] for r in figures["bertpipe"])
    print(f"ratio (scipy / bertpipe): {ratio:.2f}x")


if __name__ == "__main__":
    main()
