"""Times in the output: nanoseconds since the epoch as float seconds.

How this works: every time sipflow keeps is an int of nanoseconds; the JSON (docs/json.md)
shows seconds rounded to the microsecond, ``round(ts / NS, 6)``. :func:`seconds` gives
exactly that value without the decimal conversion ``round`` makes for most times.
"""

from __future__ import annotations

__all__ = ["NS", "seconds"]

NS = 1_000_000_000


def seconds(ts: int | None) -> float | None:
    """Nanoseconds since the epoch as float seconds, rounded to the microsecond: exactly
    ``round(ts / NS, 6)``, which costs 2.5 us a call (a decimal conversion), three per call."""
    if ts is None:
        return None
    us, ns = divmod(ts, 1000)
    if 250 <= ns <= 750 or not 0 <= ts < _FAST_BELOW:
        return round(ts / NS, 6)
    # ts / NS is within half a unit in the last place (< 240 ns below 2**32 s) of the exact
    # time, which is more than 250 ns from a half microsecond: round() rounds it to ``us``
    # (or the next) and returns the double nearest that decimal, as this division does.
    return (us + (ns > 750)) / 1_000_000


_FAST_BELOW = 2**32 * NS
"""From here on :func:`seconds` always rounds: a double's spacing reaches about 1 us."""
