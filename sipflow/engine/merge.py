"""Merge per-source message streams onto one timeline and drop duplicate captures.

How this works: each source's messages are already time-ordered, so a heap merge gives
one timeline. The same packet captured twice (two interfaces, a tunnel copy, two
overlapping capture files) has the same 5-tuple, transport and bytes within a few
milliseconds; a retransmission by a SIP element comes at least T1/2 later (RFC 3261
§17.1.1.2: T1 = 500 ms, first UDP retransmission after T1). Copies within
``DUPLICATE_WINDOW_NS`` are counted as duplicates on their source and dropped.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from sipflow.engine.shard import Tick
from sipflow.sip.message import SipMessage

DUPLICATE_WINDOW_NS = 100_000_000  # 100 ms, well under T1 = 500 ms

# (raw bytes, src ip, src port, dst ip, dst port, transport): plain str/int/bytes values,
# so hashing a key is done in C (an Endpoint or enum member would hash in Python).
_Key = tuple[bytes, str | None, int | None, str | None, int | None, str | None]


def merge_timeline(
    streams: Sequence[Iterator[SipMessage | Tick]],
) -> Iterator[SipMessage | Tick]:
    """One time-ordered stream from several time-ordered streams (stable per source)."""
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda m: m.ts)


def drop_duplicates(
    messages: Iterator[SipMessage | Tick], on_duplicate: Callable[[SipMessage], None]
) -> Iterator[SipMessage | Tick]:
    """Messages with copies captured within DUPLICATE_WINDOW_NS removed (a Tick, another
    shard's message, passes: that shard judges its duplicates)."""
    recent: dict[_Key, int] = {}
    order: deque[tuple[int, _Key]] = deque()  # the keys of ``recent`` in insertion order
    for msg in messages:
        if isinstance(msg, Tick):
            yield msg
            continue
        now = msg.ts
        horizon = now - DUPLICATE_WINDOW_NS
        while order and order[0][0] < horizon:
            del recent[order.popleft()[1]]
        key = _key(msg)
        if key in recent:
            on_duplicate(msg)
            continue
        recent[key] = now
        order.append((now, key))
        yield msg


def _key(msg: SipMessage) -> _Key:
    """Same bytes, same 5-tuple, same transport (Endpoint equality is ip and port)."""
    o = msg.origin
    if o is None:
        return (msg.raw, None, None, None, None, None)
    s, d = o.src, o.dst
    return (
        msg.raw,
        s.ip if s else None,
        s.port if s else None,
        d.ip if d else None,
        d.port if d else None,
        o.transport.value,
    )
