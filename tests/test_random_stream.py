"""The compiled replay of random.Random: every draw and the final state equal CPython's, for many seeds."""

from __future__ import annotations

import random

import numpy as np
import pytest

from components.data import random_stream as rs


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**40 + 7, 987654321])
def test_draws_equal_cpython(seed):
    ours, theirs = random.Random(seed), random.Random(seed)
    state = rs.state_of(ours)
    # 3,000 draws of each kind cross several twists of the 624-word state.
    bounds = [1, 2, 3, 7, 8, 9, 100, 2**16, 2**16 + 1, 30522, 2**31 - 1, 2**31, 2**31 + 1, 2**32 - 1]
    for i in range(3000):
        assert rs.random_float(state) == theirs.random()
        bound = bounds[i % len(bounds)]
        assert rs.randbelow(state, bound) == theirs._randbelow(bound)
        assert rs.randint(state, -5, i) == theirs.randint(-5, i)
        assert rs.next_word(state) == theirs.getrandbits(32)
    rs.restore(ours, state)
    assert ours.getstate() == theirs.getstate()


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 31, 32, 33, 127, 128, 129, 1000, 70000])
def test_shuffle_equals_cpython(length):
    theirs = random.Random(length)
    state = rs.state_of(random.Random(length))
    items = np.arange(length + 5)  # only the first `length` are shuffled
    expected = list(range(length))
    rs.shuffle(state, items, length)
    theirs.shuffle(expected)
    assert items[:length].tolist() == expected and items[length:].tolist() == list(range(length, length + 5))
    assert rs.random_float(state) == theirs.random()


def test_state_round_trip_keeps_the_python_generator_in_step():
    rng = random.Random(5)
    rng.random()
    state = rs.state_of(rng)
    expected = [rng.random() for _ in range(10)]
    rs.restore(rng, state)
    assert [rng.random() for _ in range(10)] == expected
