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
from collections import OrderedDict
from collections.abc import Callable, Iterator

from sipflow.sip.message import SipMessage

DUPLICATE_WINDOW_NS = 100_000_000  # 100 ms, well under T1 = 500 ms

_Key = tuple[object, object, object, bytes]


def merge_timeline(streams: list[Iterator[SipMessage]]) -> Iterator[SipMessage]:
    """One time-ordered stream from several time-ordered streams (stable per source)."""
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda m: m.ts)


def drop_duplicates(
    messages: Iterator[SipMessage], on_duplicate: Callable[[SipMessage], None]
) -> Iterator[SipMessage]:
    """Messages with copies captured within DUPLICATE_WINDOW_NS removed."""
    recent: OrderedDict[_Key, int] = OrderedDict()
    for msg in messages:
        now = msg.ts
        while recent:
            oldest_ts = next(iter(recent.values()))
            if oldest_ts >= now - DUPLICATE_WINDOW_NS:
                break
            recent.popitem(last=False)
        o = msg.origin
        key: _Key = (o.src, o.dst, o.transport, msg.raw) if o else (None, None, None, msg.raw)
        if key in recent:
            on_duplicate(msg)
            continue
        recent[key] = now
        yield msg
