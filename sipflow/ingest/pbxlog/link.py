"""Tie PBX channels to SIP dialogs (Call-IDs), with the rule that did it as evidence.

How this works: rules are tried in order for every channel of a log, and the first that
ties it wins; every event of the channel then gets the Call-ID and the rule's name in
``link``.

Channels are told apart by uuid when the log gives one, else by name.

1. ``callid_line``: the log names the Call-ID on a line of the channel (FreeSWITCH 1.10
   ``sending invite call-id: ...``, ``receiving invite ... call-id: ...``).
2. ``name+trace``: the channel name's user@host (FreeSWITCH ``sofia/internal/1001@host``:
   the From of an inbound INVITE, the To of an outbound one; Asterisk ``PJSIP/1001-0000001e``:
   the endpoint is the From or To user) equals the From or To of an initial INVITE (no To
   tag) logged within 400 lines of the channel's first event; the nearest wins.
3. ``near_trace``: the nearest initial INVITE within 40 lines of the channel's creation,
   when no name matched (channel names that hide the user, e.g. ``sofia/external/****``).
"""

from __future__ import annotations

from dataclasses import replace

from sipflow.errors import ParseError
from sipflow.ingest.pbxlog.types import ChannelEvent, EventKind
from sipflow.sip.message import SipMessage, SipRequest
from sipflow.sip.uri import parse_uri

NAME_WINDOW = 400
NEAR_WINDOW = 40


def _channel_key(channel: str) -> tuple[str, str | None] | None:
    """(user, host or None) named by a channel, or None."""
    parts = channel.split("/")
    if len(parts) >= 3 and parts[0] in ("sofia", "verto.rtc", "rtc"):
        user, _, host = parts[-1].partition("@")
        return (user.lower(), host.lower() or None)
    if len(parts) == 2 and parts[0] in ("PJSIP", "SIP", "IAX2"):
        endpoint = parts[1].rsplit("-", 1)[0]
        return (endpoint.lower(), None)
    return None


def _uri_keys(msg: SipMessage) -> set[tuple[str, str | None]]:
    keys: set[tuple[str, str | None]] = set()
    for na in (msg.from_, msg.to):
        if na is None:
            continue
        try:
            uri = parse_uri(na.uri)
        except ParseError:  # a URI we cannot read ties nothing
            continue
        user = (uri.user or "").lower()
        host = uri.host.lower()
        keys.add((user, None))
        keys.add((user, host))
        if uri.port is not None:
            keys.add((user, f"{host}:{uri.port}"))
    return keys


def _invites(messages: list[SipMessage], source: int) -> list[tuple[int, SipMessage]]:
    out = []
    for m in messages:
        o = m.origin
        initial = isinstance(m, SipRequest) and m.method == "INVITE" and not m.to_tag
        if initial and o is not None and o.source == source and o.frames:
            out.append((o.frames[0], m))
    return out


def _tie(channel: str, first: int, invites: list[tuple[int, SipMessage]]) -> tuple[str, str] | None:
    """(call_id, rule) for one channel, or None."""
    key = _channel_key(channel)
    best: tuple[tuple[int, int], str, str] | None = None
    for line, msg in invites:
        distance = abs(line - first)
        call_id = msg.call_id
        if call_id is None or distance > NAME_WINDOW:
            continue
        named = key is not None and key in _uri_keys(msg)
        if not named and distance > NEAR_WINDOW:
            continue
        score = (0 if named else 1, distance)
        if best is None or score < best[0]:
            best = (score, call_id, "name+trace" if named else "near_trace")
    return (best[1], best[2]) if best else None


def _instance(ev: ChannelEvent) -> tuple[int, str]:
    """One channel of one log: its uuid when known (concurrent calls to one number or
    trunk give several live channels one name), else its name."""
    return (ev.source, ev.uuid or ev.channel)


def link_channels(events: list[ChannelEvent], messages: list[SipMessage]) -> list[ChannelEvent]:
    """The events with ``call_id`` and ``link`` filled where a rule ties their channel."""
    ties: dict[tuple[int, str], tuple[str, str]] = {}
    first: dict[tuple[int, str], int] = {}
    created: set[tuple[int, str]] = set()
    names: dict[tuple[int, str], str] = {}
    for ev in events:
        key = _instance(ev)
        names.setdefault(key, ev.channel)
        if ev.kind is EventKind.NEW_CHANNEL and key not in created:
            first[key] = ev.line
            created.add(key)
        elif key not in created:
            first[key] = min(first.get(key, ev.line), ev.line)
        if ev.call_id and key not in ties:
            ties[key] = (ev.call_id, ev.link or "callid_line")
    by_source: dict[int, list[tuple[int, SipMessage]]] = {}
    for key, line in first.items():
        if key in ties:
            continue
        invites = by_source.setdefault(key[0], _invites(messages, key[0]))
        tied = _tie(names[key], line, invites)
        if tied is not None:
            ties[key] = tied
    out = []
    for ev in events:
        tied = ties.get(_instance(ev))
        if tied is not None and ev.call_id is None:
            ev = replace(ev, call_id=tied[0], link=tied[1])
        out.append(ev)
    return out
