"""Trace's JSON helpers: the fast path of ``seconds`` gives exactly what rounding gives."""

from __future__ import annotations

import random

from sipflow.timestamps import NS, seconds


def _cases() -> list[int]:
    rng = random.Random(2026)
    out = [0, 1, 499, 500, 501, 749, 750, 751, 999, 1000, -1, -500, -1500, 2**32 * NS - 1]
    for _ in range(50_000):
        t = rng.randrange(0, 2**32 * NS + 10 * NS)  # up to 2106, and past where it stops
        out += [t, t - t % 1000, t - t % 1000 + rng.choice((249, 250, 499, 500, 501, 750, 751))]
    out += [rng.randrange(-(10**12), 0) for _ in range(1000)]  # before the epoch: rounds
    out += [rng.randrange(2**32 * NS, 2**63) for _ in range(1000)]  # coarse doubles: rounds
    return out


def test_seconds_equals_round_to_the_microsecond() -> None:
    """Microsecond captures, nanosecond ones, times a hair from half a microsecond, around
    2**32 s where the fast path stops, before the epoch: always ``round(ts / NS, 6)``."""
    for ts in _cases():
        assert seconds(ts) == round(ts / NS, 6), ts
    assert seconds(None) is None
    assert seconds(1795963302771283000) == 1795963302.771283
