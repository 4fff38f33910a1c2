"""Asterisk logs: ``pjsip set logger on`` and chan_sip ``sip set debug on`` dumps, and
channel lines (Executing, allocated/destroying, hangup cause).

How this works: a dump starts with one of

    <--- Received SIP request (541 bytes) from UDP:127.0.0.1:5061 --->      (res_pjsip_logger)
    <--- Transmitting SIP response (0 bytes) to TLS:[2001:db8::1]:5061 --->
    <--- SIP read from UDP:10.24.17.254:37509 --->                           (chan_sip)
    <--- Transmitting (no NAT) to 10.24.17.254:37509 --->
    <--- Reliably Transmitting (NAT) to 10.24.17.254:37509 --->
    Reliably Transmitting (no NAT) to 10.24.18.138:5060:

optionally behind a ``[2024-01-22 13:35:21.048] VERBOSE[1234] file.c:`` prefix. The message
follows unprefixed; its body is cut by Content-Length (chan_sip also ends a dump with a
``<------------->`` line, which is consumed). chan_sip does not log the transport of sent
messages; UDP is assumed (the message's Via still tells). Timestamps come from the
bracketed prefix of the nearest line above; the ``[Jan 22 13:35:21]`` form has no year and
is read in the log's year (:class:`~sipflow.ingest.pbxlog.common.YearRef`). A line that
names no channel (``[C-0000001f] ... AST hangup cause 16``) belongs to the channel last
named under its call tag. ``logger.conf`` ``format=json`` records are matched on their
``logmsg.message`` with the ANSI colour codes removed.
"""

from __future__ import annotations

import json
import re

from sipflow.ingest.pbxlog.common import Head, Spec, host_port, iso_ts, syslog_ts, transport_of
from sipflow.ingest.pbxlog.types import ChannelEvent, EventKind

_PJSIP = re.compile(
    r"<--- (?P<dir>Received|Transmitting) SIP (?:request|response) \((?P<n>\d+) bytes\) "
    r"(?:from|to) (?P<proto>[A-Za-z]+):(?P<addr>\S+?) --->\s*$"
)
_CHANSIP = re.compile(
    r"(?:<--- )?(?P<dir>SIP read from|(?:Reliably )?Transmitting)(?: \((?:no )?NAT\))?"
    r"(?: to| from)? (?:(?P<proto>[A-Za-z]+):)?(?P<addr>[^\s>]+?)(?: --->|:)\s*$"
)
_RECORD = re.compile(r"^\[[^\]]*\d\d:\d\d:\d\d[^\]]*\] ")
_PATTERNS: tuple[tuple[EventKind, re.Pattern[str]], ...] = (
    (
        EventKind.APP_EXEC,
        re.compile(
            r"Executing \[(?P<old>[^\]]+)\] (?P<app>\w+)\(\"(?P<ch>[^\"]+)\", \"(?P<args>.*)\"\)"
        ),
    ),
    (EventKind.NEW_CHANNEL, re.compile(r"Channel 0x[0-9a-f]+ '(?P<ch>[^']+)' allocated")),
    (EventKind.CLOSE, re.compile(r"Channel 0x[0-9a-f]+ '(?P<ch>[^']+)' destroying")),
    (
        EventKind.HANGUP,
        re.compile(r"Spawn extension \((?P<old>[^)]*)\) exited non-zero on '(?P<ch>[^']+)'"),
    ),
    (EventKind.ANSWER, re.compile(r"-- (?P<ch>\S+) answered (?P<peer>\S+)")),
    (EventKind.CALLSTATE_CHANGE, re.compile(r"-- (?P<ch>\S+) is (?P<new>ringing|making progress)")),
    (EventKind.BRIDGE, re.compile(r"Channel (?P<ch>\S+) joined '(?P<new>[^']+)'")),
    (EventKind.HANGUP, re.compile(r"AST hangup cause (?P<new>\d+)")),
)
_KEYWORDS = re.compile(
    r"Executing \[|' allocated|' destroying|Spawn extension|answered|is ringing|"
    r"making progress|joined '|hangup cause"
)
_SCAN = (
    "<---",
    "Transmitting",
    "SIP/2.0",
    "Executing [",
    "' allocated",
    "' destroying",
    "Spawn extension",
    "answered",
    "is ringing",
    "making progress",
    "joined '",
    "hangup cause",
)
_CALL_TAG = re.compile(r"\[(C-[0-9a-f]+)\]")
_LEVEL = re.compile(r'^\[[^\]]*\] (\w+)\[|"level":"(\w+)"')
REPEAT_LINES = 3
"""Asterisk logs some channel lines at two levels, one after the other (``DEBUG ... Spawn
extension (ivrmenu,1,4) exited`` then ``VERBOSE ... (ivrmenu, 1, 4)``): the same event on
another level within this many lines is the same event, not a second one."""
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _addr(text: str) -> str:
    return text if text.startswith("[") or text.count(":") <= 1 else f"[{text}]"


def header(line: str) -> Head | None:
    """A pjsip logger or chan_sip dump header, or None."""
    if "SIP" not in line and "Transmitting" not in line:
        return None
    m = _PJSIP.search(line)
    if m is not None:
        return Head(
            direction="recv" if m["dir"] == "Received" else "send",
            transport=transport_of(m["proto"]),
            remote=host_port(_addr(m["addr"])),
            ts=line_ts(line),
            declared=int(m["n"]),
        )
    m = _CHANSIP.search(line)
    if m is None or not ("<---" in line or line.startswith(("Reliably", "Transmitting"))):
        return None
    return Head(
        direction="recv" if m["dir"] == "SIP read from" else "send",
        transport=transport_of(m["proto"] or "UDP"),
        remote=host_port(_addr(m["addr"])),
        ts=line_ts(line),
    )


def line_ts(line: str) -> int | None:
    """``[2026-01-22 13:35:21.048]`` or ``[Jan 22 13:35:21]`` at the start of a line."""
    if line.startswith('{"'):
        at = line.find('"timestamp":"')
        stamp = line[at + 13 : at + 40] if at >= 0 else ""
        return iso_ts(stamp) if stamp[:1].isdigit() else syslog_ts(stamp) if stamp else None
    if not line.startswith("["):
        return None
    end = line.find("]")
    if end < 0:
        return None
    stamp = line[1:end]
    return iso_ts(stamp) if stamp[:1].isdigit() else syslog_ts(stamp)


def _message(line: str) -> str:
    """The text of a log line: a ``format=json`` record's ``logmsg.message`` without its
    ANSI colour codes, else the line itself."""
    if not line.startswith('{"'):
        return line
    try:
        record = json.loads(line)
        text = record["logmsg"]["message"]
    except (ValueError, KeyError, TypeError):
        return line
    return _ANSI.sub("", text).rstrip("\n") if isinstance(text, str) else line


def event(line: str, number: int, tags: dict[str, str] | None = None) -> ChannelEvent | None:
    """An Asterisk channel line (see ``_PATTERNS``), or None. ``tags`` maps a call tag
    (``[C-0000001f]``) to the channel last named under it, for lines that name no channel
    (``AST hangup cause 16``); it is filled as lines are read."""
    if _KEYWORDS.search(line) is None:
        return None
    tag = _CALL_TAG.search(line)
    text = _message(line)
    for kind, pattern in _PATTERNS:
        m = pattern.search(text)
        if m is None:
            continue
        g = m.groupdict()
        channel = g.get("ch")
        if channel is None:
            channel = (tags or {}).get(tag[1], tag[1]) if tag else "unknown"
        elif tag and tags is not None:
            tags[tag[1]] = channel
        new = g.get("new")
        if kind is EventKind.APP_EXEC:
            new = f"{g['app']}({g['args']})"
        return ChannelEvent(
            -1, channel, None, kind, g.get("old"), new, None, number, line, peer=g.get("peer")
        )
    return None


def _level(line: str) -> str | None:
    m = _LEVEL.search(line)
    return (m[1] or m[2]) if m else None


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").replace(" ", "") == (b or "").replace(" ", "")


class _Events:
    """Channel lines of one log, each event once: a line repeating the event just read for
    its channel on another log level (:data:`REPEAT_LINES`) gives none (the engine counts
    it with the other lines it does not use)."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}  # call tag -> channel last named under it
        self.last: dict[str, tuple[ChannelEvent, str | None]] = {}  # channel -> event, level

    def __call__(self, line: str, number: int) -> ChannelEvent | None:
        ev = event(line, number, self.tags)
        if ev is None:
            return None
        level = _level(line)
        prev = self.last.get(ev.channel)
        self.last[ev.channel] = (ev, level)
        if prev is not None and self._repeats(prev[0], prev[1], ev, level):
            return None
        return ev

    @staticmethod
    def _repeats(a: ChannelEvent, a_level: str | None, b: ChannelEvent, level: str | None) -> bool:
        return (
            a.kind is b.kind
            and a_level != level
            and b.line - a.line <= REPEAT_LINES
            and _same(a.old, b.old)
            and _same(a.new, b.new)
        )


def _spec(name: str) -> Spec:
    return Spec(
        name=name,
        header=header,
        end=re.compile(r"^\s*<-{3,}>\s*$"),
        record=_RECORD,
        event=_Events(),
        line_ts=line_ts,
        local_name="asterisk",
        scan=_SCAN,
    )


def pjsip_spec() -> Spec:
    return _spec("asterisk-pjsip")


def chansip_spec() -> Spec:
    return _spec("asterisk-chansip")
