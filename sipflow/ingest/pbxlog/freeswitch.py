"""FreeSWITCH logs: sofia siptrace blocks and channel events.

How this works: ``sofia global siptrace on`` (and drachtio, which uses the same sofia-sip
stack) prints each message after a trace line

    recv 823 bytes from tcp/[10.0.0.1]:35365 at 09:55:07.936234:
       ------------------------------------------------------------------------
       INVITE sip:... SIP/2.0
       ...
       ------------------------------------------------------------------------

with or without the dashed lines and the indentation, the trace line bare or behind a log
prefix (``2019-03-22 09:55:08.041945 [DEBUG] file.c:123``, or the uuid-prefixed format of
FreeSWITCH 1.10). The trace line has only a time of day; the date comes from the nearest
dated line. The address may be a placeholder (``caller_ip``) and is kept as written.

Channel events are read from the core's log lines (``New Channel name [uuid]``,
``State Change CS_X -> CS_Y``, ``Callstate Change A -> B``, sofia ``entering state``,
dialplan ``Processing``/``Regex``/``Action``, ``EXECUTE``, ``Originate Resulted in``,
``has been answered``, ``Hangup ... [cause]``, ``Close Channel``, and FreeSWITCH 1.10's
``sending invite call-id:``). Each is tied to its channel by, in order: the uuid prefix
of the line, a ``(channel)`` after the source location, the channel named in the event,
and otherwise the channel the log talked about last; for a bare ``State Change X -> Y``
the channel whose last state is X is preferred (pasted excerpts often drop prefixes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sipflow.ingest.pbxlog.common import Head, Spec, host_port, iso_ts, time_of_day, transport_of
from sipflow.ingest.pbxlog.types import ChannelEvent, EventKind

FORMAT = "freeswitch"

_TRACE = re.compile(
    r"^(?P<pre>.*?)\b(?P<dir>recv|send) (?P<n>\d+) bytes (?:from|to) "
    r"(?P<proto>[a-zA-Z]+)/\[(?P<ip>[^\]]*)\]:(?P<port>\d+) at "
    r"(?P<tod>\d\d:\d\d:\d\d(?:\.\d+)?):?\s*$"
)
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# uuid? date? cpu%? [LEVEL]? file.c:line? (channel)?
_PREFIX = re.compile(
    rf"^\s*(?:(?P<uuid>{_UUID}) )?"
    r"(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? )?"
    r"(?:[\d.]+% )?(?:\[[A-Z]+\] )?(?:[\w.]+\.c(?:pp)?:\d+ )?"
    r"(?:\((?P<chan>[^()\s]+/[^()\s]+)\) )?"
)
_CHANNEL = re.compile(
    r"(?<![\w/])((?:sofia|loopback|verto\.rtc|rtc|freetdm|skinny|portaudio|error)/"
    r"[^\s\[\]()!,<>\"'{}]+)"
)
_CALLSTATES = "DOWN|DIALING|RINGING|EARLY|ACTIVE|HELD|RING_WAIT|HANGUP|UNHELD"
_PATTERNS: tuple[tuple[EventKind, re.Pattern[str]], ...] = (
    (EventKind.NEW_CHANNEL, re.compile(rf"New Channel (?P<ch>\S+) \[(?P<uuid>{_UUID})\]")),
    (EventKind.STATE_CHANGE, re.compile(r"^State Change (?P<old>CS_\w+) -> (?P<new>CS_\w+)")),
    (
        EventKind.CALLSTATE_CHANGE,
        re.compile(rf"^(?:Callstate )?Change (?P<old>{_CALLSTATES}) -> (?P<new>{_CALLSTATES})\b"),
    ),
    (
        EventKind.SOFIA_STATE,
        re.compile(r"^(?:Channel (?P<ch>\S+) )?entering state \[(?P<new>\w+)\]\[(?P<old>\d+)\]"),
    ),
    (EventKind.DIALPLAN, re.compile(r"^Processing (?P<old>.+?) in context (?P<new>\S+)")),
    (EventKind.DIALPLAN, re.compile(r"^Dialplan: (?P<ch>\S+) (?P<new>.+?)\s*$")),
    (
        EventKind.APP_EXEC,
        re.compile(r"^EXECUTE (?:\[depth=\d+\] )?(?P<ch>\S+) (?P<new>[\w.]+\(.*\))\s*$"),
    ),
    (
        EventKind.ORIGINATE,
        re.compile(r"^Originate Resulted in (?P<new>\w+): \[(?P<peer>[^\]]+)\]"),
    ),
    (EventKind.ANSWER, re.compile(r"^(?:Channel \[(?P<ch>[^\]]+)\] )?has been answered")),
    (
        EventKind.HANGUP,
        re.compile(r"^Hangup (?P<ch>\S+) \[(?P<old>CS_\w+)\] \[(?P<new>\w+)\]"),
    ),
    (EventKind.HANGUP, re.compile(r"^Channel (?P<ch>\S+) hanging up, cause: (?P<new>\w+)")),
    (EventKind.CLOSE, re.compile(r"^Close Channel (?P<ch>\S+) \[(?P<old>CS_\w+)\]")),
    (EventKind.SIP_CALL_ID, re.compile(r"^(?P<ch>\S+ )?sending invite call-id: (?P<new>\S+)")),
    (EventKind.SIP_CALL_ID, re.compile(r"^receiving invite from .* call-id: (?P<new>\S+)")),
)
_KEYWORDS = re.compile(
    r"New Channel|State Change|Change [A-Z]|entering state|Processing |Dialplan: |EXECUTE |"
    r"Originate Resulted|has been answered|Hangup |hanging up|Close Channel|call-id: "
)

# Literals that cover every line _TRACE, _PATTERNS and channel tracking need (Channel:
# New/Close Channel, "Channel X entering state", "hanging up"; Change: State/Callstate).
_SCAN = (
    "bytes ",
    "SIP/2.0",
    "Channel",
    "Change ",
    "entering state",
    "Processing ",
    "Dialplan: ",
    "EXECUTE ",
    "Originate",
    "answered",
    "Hangup ",
    "call-id: ",
    "sofia/",
    "loopback/",
    "verto.rtc/",
)


def header(line: str) -> Head | None:
    """A sofia trace line, or None."""
    if " bytes " not in line:
        return None
    m = _TRACE.match(line)
    if m is None:
        return None
    tod = time_of_day(m["tod"])
    date = iso_ts(m["pre"]) if m["pre"] else None
    ts = None
    if date is not None and tod is not None:
        ts = date - date % 86_400_000_000_000 + tod
    transport = transport_of(m["proto"])
    ip = f"[{m['ip']}]" if ":" in m["ip"] else m["ip"]
    return Head(
        direction=m["dir"],
        transport=transport,
        remote=host_port(f"{ip}:{m['port']}"),
        ts=ts,
        tod=None if ts is not None else tod,
        declared=int(m["n"]),
    )


def line_ts(line: str) -> int | None:
    """Time of an ordinary log line: ``2019-03-22 09:55:08.041945 ...``, uuid-prefixed or not."""
    if len(line) > 26 and line[4] == "-" and line[10] == " ":
        return iso_ts(line[:26])
    if len(line) > 63 and line[8] == "-" and line[36] == " " and line[41] == "-":
        return iso_ts(line[37:63])
    if line[:1] == " " and "-" in line[:16]:
        return iso_ts(line[:40])
    return None


@dataclass
class ChannelTracker:
    """Who the log is talking about: uuid <-> name, and each channel's last states."""

    names: dict[str, str] = field(default_factory=dict)  # uuid -> name
    uuids: dict[str, str] = field(default_factory=dict)  # name -> uuid
    state: dict[str, str] = field(default_factory=dict)  # name -> last CS_*
    callstate: dict[str, str] = field(default_factory=dict)  # name -> last callstate
    current: str | None = None

    def event(self, line: str, number: int) -> ChannelEvent | None:
        if "/" not in line and _KEYWORDS.search(line) is None:
            return None
        prefix = _PREFIX.match(line)
        rest = line[prefix.end() :] if prefix else line
        uuid = prefix["uuid"] if prefix else None
        explicit = prefix["chan"] if prefix else None
        if uuid and not explicit:
            explicit = self.names.get(uuid)
        if _KEYWORDS.search(rest) is None:
            self.notice(explicit, rest)
            return None
        for kind, pattern in _PATTERNS:
            m = pattern.search(rest) if kind is EventKind.NEW_CHANNEL else pattern.match(rest)
            if m is not None:
                return self.build(kind, m, explicit, uuid, line, number)
        self.notice(explicit, rest)
        return None

    def notice(self, explicit: str | None, rest: str) -> None:
        """A line that is no event still tells which channel the log is about."""
        if explicit:
            self.current = explicit
        elif "/" in rest:
            m = _CHANNEL.search(rest)
            if m:
                self.current = m[1].rstrip(".:")

    def build(
        self,
        kind: EventKind,
        m: re.Match[str],
        explicit: str | None,
        uuid: str | None,
        line: str,
        number: int,
    ) -> ChannelEvent:
        groups = m.groupdict()
        named = groups.get("ch")
        if kind is EventKind.DIALPLAN and named and "/" not in named:
            named = None
        channel = explicit or (named.rstrip(".:") if named else None)
        old, new = groups.get("old"), groups.get("new")
        if kind is EventKind.NEW_CHANNEL:
            uuid = groups["uuid"]
            self.names[uuid] = channel or ""
            self.uuids[channel or ""] = uuid
        if channel is None:
            channel = self.infer(kind, old)
        self.current = channel
        peer = groups.get("peer")
        if kind is EventKind.DIALPLAN and new and "bridge(" in new:
            found = _CHANNEL.findall(new)
            peer = found[-1].rstrip(".:") if found else None
        self.track(kind, channel, new)
        call_id = new if kind is EventKind.SIP_CALL_ID and new != "(null)" else None
        return ChannelEvent(
            -1,
            channel,
            uuid or self.uuids.get(channel),
            kind,
            old,
            new,
            call_id,
            number,
            line,
            peer=peer,
            link="callid_line" if call_id else None,
        )

    def infer(self, kind: EventKind, old: str | None) -> str:
        """The channel of an event line that names none (see the module docstring)."""
        current = self.current or "unknown"
        table = {EventKind.STATE_CHANGE: self.state, EventKind.CALLSTATE_CHANGE: self.callstate}
        states = table.get(kind)
        if states is None or old is None:
            return current
        default = "DOWN" if kind is EventKind.CALLSTATE_CHANGE else "CS_NEW"
        if states.get(current, default) == old:
            return current
        known = set(self.uuids) | set(states) | ({current} if self.current else set())
        fits = [c for c in known if states.get(c, default) == old]
        return fits[0] if len(fits) == 1 else current

    def track(self, kind: EventKind, channel: str, new: str | None) -> None:
        if kind is EventKind.STATE_CHANGE and new:
            self.state[channel] = new
        elif kind is EventKind.CALLSTATE_CHANGE and new:
            self.callstate[channel] = new


def spec() -> Spec:
    """A fresh reader description (channel tracking is per log)."""
    tracker = ChannelTracker()
    return Spec(
        name=FORMAT,
        header=header,
        end=re.compile(r"^\s*-{20,}\s*$"),
        record=re.compile(rf"^(?:{_UUID} )?\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d"),
        strip=None,
        event=tracker.event,
        line_ts=line_ts,
        local_name="freeswitch",
        scan=_SCAN,
    )
