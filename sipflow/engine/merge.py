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


LATE_OPEN_NS = 2_000_000_000
"""A source is opened this long before its first record's time: a capture's records may be
that much out of order (``sipflow.engine.local.REORDER_WINDOW_NS``)."""


def merge_timeline(
    streams: Sequence[Iterator[SipMessage | Tick]],
    starts: Sequence[int | None] | None = None,
) -> Iterator[SipMessage | Tick]:
    """One time-ordered stream from several time-ordered streams (stable per source: equal
    times in source order). With ``starts`` (each source's first record time, None when
    unknown), a source is first read when the timeline comes within LATE_OPEN_NS of its
    start, so rotated captures are read one or two at a time, not all primed at once."""
    if len(streams) == 1:
        return streams[0]
    if starts is None or all(s is None for s in starts):
        return heapq.merge(*streams, key=lambda m: m.ts)
    return _merge_late(streams, starts)


def _merge_late(
    streams: Sequence[Iterator[SipMessage | Tick]], starts: Sequence[int | None]
) -> Iterator[SipMessage | Tick]:
    heap: list[tuple[int, int, SipMessage | Tick]] = []
    waiting = sorted((s - LATE_OPEN_NS, i) for i, s in enumerate(starts) if s is not None)
    waiting.reverse()  # popped from the end: earliest first

    def pull(i: int) -> None:
        item = next(streams[i], None)
        if item is not None:
            heapq.heappush(heap, (item.ts, i, item))

    for i, s in enumerate(starts):
        if s is None:
            pull(i)
    while heap or waiting:
        while waiting and (not heap or waiting[-1][0] <= heap[0][0]):
            pull(waiting.pop()[1])
        if heap:
            _ts, i, item = heapq.heappop(heap)
            yield item
            pull(i)


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
