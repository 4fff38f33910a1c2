"""Bugs found by reading real logs by hand (the log audit); each test uses the log it was
found in. Corpus logs are read from ../shared and skipped when it is absent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sipflow.ingest.pbxlog import ChannelEvent, EventKind, LogMessage, read_log
from sipflow.ingest.pbxlog.common import iso_ts
from sipflow.ingest.types import SourceStats
from sipflow.sip.message import parse_message

DATA = Path(__file__).resolve().parents[2] / "data" / "pbxlog"
LOGS = Path(__file__).resolve().parents[3] / ".." / "shared" / "corpus" / "logs"


def _corpus(name: str) -> Path:
    path = LOGS / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (shared corpus not available)")
    return path


def _read(path: Path) -> tuple[list[LogMessage | ChannelEvent], SourceStats]:
    stats = SourceStats(str(path))
    return list(read_log(str(path), 0, stats, [])), stats


def test_lf_body_is_read_to_its_content_length() -> None:
    """chan_sip NOTIFY with a pidf body of LF-ended lines (Content-Length 602, lines 20-38):
    the body was cut at 602 bytes counted with CRLF, losing ``</presence>`` (line 38)."""
    items, _ = _read(DATA / "asterisk_chansip_presencestate_notify.log")
    notify = next(i for i in items if isinstance(i, LogMessage) and i.data.startswith(b"NOTIFY"))
    msg = parse_message(notify.data, notify.origin)
    assert not [p for p in msg.problems if "octets after" in p]
    assert notify.data.rstrip().endswith(b"</presence>")
    assert len(notify.data.partition(b"\r\n\r\n")[2]) == 602
    assert 38 in notify.origin.frames


def test_undated_event_lines_keep_the_time_before_them() -> None:
    """FreeSWITCH 1.10 uuid-prefixed ``Dialplan:`` lines carry no date; lines 1622-1626 are
    more than 200 lines below the last dated one and were timed at the epoch."""
    path = _corpus("freeswitch110_debug_internal_calls_scanners.log")
    first = next(t for line in path.open(encoding="utf-8") if (t := iso_ts(line)) is not None)
    items, _ = _read(path)
    events = [i for i in items if isinstance(i, ChannelEvent)]
    assert events and min(e.ts for e in events) >= first
    late = [e for e in events if 1622 <= e.line <= 1626]
    assert len(late) == 5
    before = max(e.ts for e in events if e.line < 1622)
    assert all(e.ts == before for e in late)


def _asterisk_events(name: str) -> list[ChannelEvent]:
    items, _ = _read(_corpus(name))
    return [i for i in items if isinstance(i, ChannelEvent)]


def test_asterisk_hangup_cause_belongs_to_the_channel_of_its_call_tag() -> None:
    """``[C-0000001f] chan_pjsip.c: AST hangup cause 16`` is the hangup of the channel that
    ran under call tag C-0000001f (PJSIP/1001-0000001e), not a channel named C-0000001f."""
    path = _corpus("asterisk18_full_debug_register_invite_ivr.log")
    events = _asterisk_events(path.name)
    tag_of = {}
    for line in path.read_text("utf-8").splitlines():
        m = re.search(r"\[(C-[0-9a-f]+)\] pbx\.c: Executing \[[^\]]+\] \w+\(\"([^\"]+)\"", line)
        if m:
            tag_of[m[1]] = m[2]
    causes = [e for e in events if e.kind is EventKind.HANGUP and e.new == "16"]
    assert len(causes) == 3
    for e in causes:
        tag = re.search(r"\[(C-[0-9a-f]+)\]", e.text)
        assert tag is not None
        assert e.channel == tag_of[tag[1]]


def test_asterisk_json_log_gives_the_events_of_the_text_log() -> None:
    """The format=json log of the same run: its ``Executing`` lines hide the quotes as
    ``\\"`` and carry ANSI colour codes, so no app_exec event was read."""
    text = _asterisk_events("asterisk18_full_debug_register_invite_ivr.log")
    path = _corpus("asterisk18_full_json_format.log")
    json_events = _asterisk_events(path.name)
    executing = sum("Executing [" in line for line in path.read_text("utf-8").splitlines())
    assert executing == 27
    assert sum(e.kind is EventKind.APP_EXEC for e in json_events) == executing
    key = [(e.line, e.kind, e.channel, e.new) for e in text]
    assert [(e.line, e.kind, e.channel, e.new) for e in json_events] == key


def test_asterisk_event_logged_at_two_levels_is_one_event() -> None:
    """``DEBUG ... Spawn extension (ivrmenu,1,4) exited non-zero on 'PJSIP/1001-0000001e'``
    and the ``VERBOSE`` line after it (``(ivrmenu, 1, 4)``) are one hangup: each exit
    location gives one event, counted against the VERBOSE lines alone."""
    path = _corpus("asterisk18_full_debug_register_invite_ivr.log")
    lines = path.read_text("utf-8").splitlines()
    spawn = [line for line in lines if "Spawn extension" in line]
    verbose = [line for line in spawn if "] VERBOSE[" in line]
    assert len(spawn) == 6 and len(verbose) == 3
    exits = [e for e in _asterisk_events(path.name) if e.kind is EventKind.HANGUP and e.old]
    assert len(exits) == len(verbose)
    assert [e.line for e in exits] == [
        n for n, line in enumerate(lines, 1) if "Spawn extension" in line and "] DEBUG[" in line
    ]


def test_message_above_the_first_date_takes_the_date_below_it() -> None:
    """The excerpt starts with the BYE (lines 1-9), undated; the first dated line below it
    says 2026-01-22 13:35:21.048. The BYE was timed at the epoch (1970)."""
    path = _corpus("issues/issue_asterisk_1735_pjsip_bye_481_debug.log")
    lines = path.read_text("utf-8").splitlines()
    assert lines[0].startswith("BYE ")
    first = next(t for line in lines if (t := iso_ts(line[1:24])) is not None)
    items, _ = _read(path)
    bye = next(i for i in items if isinstance(i, LogMessage))
    assert bye.origin.frames[0] == 1
    assert bye.origin.ts == first == iso_ts("2026-01-22 13:35:21.048")


def test_blink_bodies_keep_their_own_line_ends() -> None:
    """Blink writes each SIP line with its CRLF and its own lines with LF; multipart bodies
    mix CRLF (MIME lines) and LF (XML lines). Rebuilt with CRLF everywhere they were 3 bytes
    over Content-Length (80 ``sip.trailing_octets`` warnings); each body now equals the log's
    bytes between the empty line and the message end, and its Content-Length."""
    path = _corpus("blink_sip_client_trace_tls_publish_invite_msrp.log")
    raw = path.read_bytes().split(b"\n")
    items, _ = _read(path)
    msgs = [i for i in items if isinstance(i, LogMessage)]
    multipart = [m for m in msgs if b"\r\nContent-Type: multipart/" in m.data]
    assert len(multipart) >= 80
    for m in multipart:
        msg = parse_message(m.data, m.origin)
        assert not msg.problems
        body = m.data.partition(b"\r\n\r\n")[2]
        start = raw.index(b"\r", m.origin.frames[0]) + 1  # the empty line (0-based, +1)
        assert body == b"\n".join(raw[start : start + body.count(b"\n")]) + b"\n"
        assert len(body) == int(msg.headers.get("Content-Length") or -1)


@pytest.mark.parametrize(
    "name",
    [
        "issues/issue_drachtio_server_195_freeswitch_siptrace_tcp_invite.log",
        "issues/issue_drachtio_siprec_49_broadworks_siprec_invite.log",
    ],
)
def test_body_cut_by_the_end_of_the_log_is_counted_truncated(name: str) -> None:
    """Both excerpts end inside the INVITE body (Content-Length 1040 and 449)."""
    path = _corpus(name)
    assert not path.read_bytes().endswith(b"\n") or path.stat().st_size < 2000
    _, stats = _read(path)
    assert stats.skipped["truncated_messages"] == 1
