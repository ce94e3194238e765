"""CPython's `random.Random` draws, compiled with numba, for loops that must replay Google's random calls exactly.

Google's create_pretraining_data.py makes tens of millions of `random.Random` calls
(a shuffle of every instance's words, an 80/10/10 draw per masked piece...). Replaying
them call by call in Python costs most of the step's time. These functions produce the
same numbers from the same Mersenne Twister state: `random()`, `getrandbits(k)` for
k <= 32, `randint`/`randrange` (CPython's rejection loop `_randbelow`) and `shuffle`.

The state is an int64 array of 625 entries: CPython's 624 key words and the position,
as `random.Random.getstate()` gives them (`state_of` / `restore` convert).
"""

from __future__ import annotations

import random

import numpy as np
from numba import njit

_N = 624
_M = 397
_MATRIX_A = 0x9908B0DF
_UPPER = 0x80000000
_LOWER = 0x7FFFFFFF
_WORD = 0xFFFFFFFF


def state_of(rng: random.Random) -> np.ndarray:
    """The generator's Mersenne Twister state as the int64[625] the compiled draws use."""
    version, internal, _ = rng.getstate()
    if version != 3 or len(internal) != _N + 1:
        raise RuntimeError(f"unexpected random.Random state layout (version {version}, {len(internal)} words)")
    return np.array(internal, dtype=np.int64)


def restore(rng: random.Random, state: np.ndarray) -> None:
    """Put a state advanced by the compiled draws back into the Python generator."""
    rng.setstate((3, tuple(int(word) for word in state), None))


@njit(cache=True)
def _twist(state):
    for kk in range(_N):
        y = (state[kk] & _UPPER) | (state[(kk + 1) % _N] & _LOWER)
        value = state[(kk + _M) % _N] ^ (y >> 1)
        if y & 1:
            value ^= _MATRIX_A
        state[kk] = value


@njit(cache=True)
def next_word(state):
    """genrand_uint32: the next 32-bit output (what getrandbits(32) returns)."""
    index = state[_N]
    if index >= _N:
        _twist(state)
        index = 0
    y = state[index]
    state[_N] = index + 1
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return y & _WORD


@njit(cache=True)
def random_float(state):
    """random.Random.random(): 53 bits from two words."""
    a = next_word(state) >> 5
    b = next_word(state) >> 6
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def bit_length(n):
    k = 0
    while n:
        k += 1
        n >>= 1
    return k


@njit(cache=True)
def randbelow(state, n):
    """random.Random._randbelow(n) for 1 <= n < 2**32: getrandbits(n.bit_length()) until below n."""
    shift = 32 - bit_length(n)
    r = next_word(state) >> shift
    while r >= n:
        r = next_word(state) >> shift
    return r


@njit(cache=True)
def randint(state, low, high):
    """random.Random.randint(low, high)."""
    return low + randbelow(state, high - low + 1)


@njit(cache=True)
def shuffle(state, items, count):
    """random.Random.shuffle of items[:count] (Fisher-Yates from the end, _randbelow(i + 1))."""
    shift = 32 - bit_length(count)
    for i in range(count - 1, 0, -1):
        n = i + 1
        while n < (1 << (31 - shift)):  # n.bit_length() shrank by one
            shift += 1
        j = next_word(state) >> shift
        while j >= n:
            j = next_word(state) >> shift
        items[i], items[j] = items[j], items[i]
