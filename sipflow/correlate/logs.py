"""The Call-IDs a PBX log ties together: step 1 (c) of :mod:`sipflow.correlate.legs`.

How this works: each channel of a log gathers its Call-IDs, answers and hangups from the
channel events (:func:`sipflow.ingest.pbxlog.link_channels` set their Call-IDs). An
originate, dialplan bridge or ``answered`` line names a peer channel; Asterisk bridges
name the bridge both channels join. Channels are told apart by uuid, and a peer named only
by its channel name is resolved to one channel of that name (:func:`_peer`: concurrent
calls to one number share it). Each pair of tied channels gives every pair of their
Call-IDs one ``pbx_log`` Evidence. Kept apart from the legs: a capture-only run has no
channel events and does not load the log types (legs imports this module when it has some).
"""

from __future__ import annotations

import itertools
import re
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field

from sipflow.correlate.evidence import Evidence
from sipflow.ingest.pbxlog.types import ChannelEvent, EventKind

__all__ = ["LOG_WEIGHT", "log_links"]

LOG_WEIGHT = 7.0
"""A PBX log line tying two channels (originate, bridge) is nearly as good as a header."""

ChanKey = tuple[int, str]
"""(log source, uuid) of a channel, or (log source, name) when the log gives no uuid."""
_UUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_PEER_UUID = re.compile(rf"Peer UUID: ({_UUID.pattern})")
"""FreeSWITCH 1.10 (later builds) ends the originate line with the new channel's uuid."""
_AHEAD = frozenset({EventKind.DIALPLAN, EventKind.APP_EXEC})
"""Events naming a channel still to be created (dialplan ``bridge(...)`` target)."""


def _key(e: ChannelEvent) -> ChanKey:
    return (e.source, e.uuid or e.channel)


@dataclass
class _Channel:
    """One channel of a log (several may share a name: calls to one number or trunk)."""

    first: int
    """Log line of its first event (``New Channel``)."""
    call_ids: dict[str, None] = field(default_factory=dict)
    answered: list[int] = field(default_factory=list)
    """Lines where it was answered (``has been answered``, callstate ACTIVE)."""
    ended: list[int] = field(default_factory=list)
    """Lines where it hung up or closed."""


Named = dict[tuple[int, str], tuple[list[int], list[ChanKey]]]
"""(source, channel name) -> creation lines (ascending) and keys of the channels so named."""


def _channels(events: list[ChannelEvent]) -> tuple[dict[ChanKey, _Channel], Named]:
    """Every channel by key, and the channels of each (source, name) in creation order."""
    chans: dict[ChanKey, _Channel] = {}
    names: dict[tuple[int, str], list[ChanKey]] = defaultdict(list)
    for e in events:
        key = _key(e)
        ch = chans.get(key)
        if ch is None:
            ch = chans[key] = _Channel(e.line)
            names[(e.source, e.channel)].append(key)
        if e.call_id:
            ch.call_ids[e.call_id] = None
        if e.kind is EventKind.ANSWER or (
            e.kind is EventKind.CALLSTATE_CHANGE and e.new == "ACTIVE"
        ):
            ch.answered.append(e.line)
        elif e.kind in (EventKind.HANGUP, EventKind.CLOSE):
            ch.ended.append(e.line)
    named: Named = {}
    for name, keys in names.items():
        keys.sort(key=lambda k: chans[k].first)
        named[name] = ([chans[k].first for k in keys], keys)
    return chans, named


def _decided(ch: _Channel, e: ChannelEvent) -> int:
    """Line of the channel's last answer (Success) or hangup (any other result) up to
    the originate line ``e``: the originate result is logged as the peer decides."""
    lines = ch.answered if e.new == "Success" else ch.ended
    return max((x for x in lines if x <= e.line), default=-1)


def _peer(
    e: ChannelEvent,
    chans: dict[ChanKey, _Channel],
    named: Named,
    claimed: set[tuple[bool, ChanKey]],
) -> ChanKey | None:
    """The channel ``e`` names as its peer. By the uuid the line carries when it does;
    else among the channels of that name: for a dialplan bridge the next one created
    after the line; for an originate result one created between its caller and the line
    and not yet claimed by another originate, the one whose answer (or hangup, on
    failure) came last before the line (FreeSWITCH logs ``Originate Resulted in Success:
    [name]`` right after the peer answered), else (a caller's CANCEL ends the originate
    before the peer hangs up) the first created after the caller;
    for other lines (Asterisk ``answered``) the one created last before the line."""
    own = _key(e)
    m = _PEER_UUID.search(e.text)
    if m is not None and (e.source, m[1].lower()) in chans:
        return (e.source, m[1].lower())
    if e.peer and _UUID.fullmatch(e.peer) and (e.source, e.peer) in chans:  # named by uuid
        return (e.source, e.peer)
    firsts, keys = named.get((e.source, e.peer or ""), ([], []))
    ahead = e.kind in _AHEAD

    def free(k: ChanKey) -> bool:
        return k != own and (ahead, k) not in claimed

    hi = bisect_right(firsts, e.line)
    if ahead:
        return next((k for k in itertools.islice(keys, hi, None) if free(k)), None)
    if e.kind is EventKind.ORIGINATE:
        lo = bisect_left(firsts, chans[own].first) if own in chans else 0
        pool = [k for k in keys[lo:hi] if free(k)]
        return max(pool, key=lambda k: (_decided(chans[k], e), -chans[k].first), default=None)
    return next((keys[i] for i in range(hi - 1, -1, -1) if free(keys[i])), None)


def log_links(events: list[ChannelEvent]) -> list[tuple[str, str, Evidence]]:
    """(Call-ID, Call-ID, evidence) for channels a PBX log ties together."""
    chans, named = _channels(events)
    pairs: list[tuple[ChanKey, ChanKey, ChannelEvent]] = []
    bridges: dict[tuple[int, str], list[ChannelEvent]] = defaultdict(list)
    claimed: set[tuple[bool, ChanKey]] = set()
    for e in events:
        if e.peer:
            other = _peer(e, chans, named, claimed)
            if other is not None and other != _key(e):
                pairs.append((_key(e), other, e))
                if e.kind is EventKind.ORIGINATE or e.kind in _AHEAD:
                    claimed.add((e.kind in _AHEAD, other))
        elif e.kind is EventKind.BRIDGE and e.new:  # Asterisk: channels joining one bridge
            bridges[(e.source, e.new)].append(e)
    for members in bridges.values():
        for x, y in itertools.pairwise(members):
            if _key(x) != _key(y):
                pairs.append((_key(x), _key(y), y))
    out = []
    for k1, k2, e in pairs:
        ev = Evidence("pbx_log", f"{e.kind.value} (log line {e.line})", k1[1], k2[1], LOG_WEIGHT)
        for c1 in chans[k1].call_ids if k1 in chans else ():
            for c2 in chans[k2].call_ids if k2 in chans else ():
                if c1 != c2:
                    out.append((c1, c2, ev))
    return out
