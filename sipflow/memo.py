"""Bounded memos for parsed values that recur (start lines, header lines, SDP lines).

How this works: a memo is a plain dict read inline by its hot path (``cache.get(key)``:
no Python call on a hit); a miss computes the value and stores it with :func:`remember`,
which empties the dict when it is full. Emptying, rather than evicting one entry, keeps
the store cheap and the bound exact; what recurs (a capture's few methods, addresses,
SDP attribute sets) is back after one miss. The keys are wire text, so every memo must
be bounded: memory must follow the calls still open, not the file (docs/live.md).
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["remember"]


def remember(cache: dict[K, V], key: K, value: V, limit: int) -> V:
    """Store ``value`` under ``key`` (the dict emptied first when it holds ``limit``
    entries) and return it."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value
