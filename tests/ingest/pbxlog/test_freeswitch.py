"""The seed: a FreeSWITCH B2BUA call traced with sofia siptrace, pasted HTML-escaped.

Expected values were written by reading tests/data/pbxlog/freeswitch_seed_call_routing_article.txt
(= ../shared/seed/call-routing-article.txt lines 1-593) by hand: 12 siptrace blocks (the
trace lines at 67, 126, 228, 288, 303, 315, 331, 378, 393, 449, 541, 580), the two channels'
``State Change`` / ``Callstate Change`` lines, and the dialplan lines 143-148.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sipflow.findings import Finding
from sipflow.ingest.pbxlog import ChannelEvent, EventKind, LogMessage, link_channels, read_log
from sipflow.ingest.pbxlog.common import iso_ts
from sipflow.ingest.types import Endpoint, SourceStats, Transport
from sipflow.sip.message import SipMessage, SipRequest, parse_message

SEED = (
    Path(__file__).resolve().parents[2]
    / "data"
    / "pbxlog"
    / "freeswitch_seed_call_routing_article.txt"
)
INBOUND = "sofia/internal/from_number@sometelco.com:5060"
OUTBOUND = "sofia/external/to_number@ip_addr"
A_CALL = "94385YTY3ODNlNzE1YjE5MmY4NmQ3ZWUyZDAzM2E0YzBkM2I"
B_CALL = "6a827514-c72b-1237-8aab-02a933b32da0"
CALLER = Endpoint("caller_ip", 35365)
TRUNK = Endpoint("ip_addr", 5061)


@pytest.fixture(scope="module")
def seed() -> tuple[list[SipMessage], list[ChannelEvent], SourceStats, list[Finding]]:
    stats, findings = SourceStats(str(SEED)), []
    msgs: list[SipMessage] = []
    events: list[ChannelEvent] = []
    for item in read_log(str(SEED), 0, stats, findings):
        if isinstance(item, LogMessage):
            msgs.append(parse_message(item.data, item.origin))
        else:
            events.append(item)
    return msgs, events, stats, findings


def _label(m: SipMessage) -> str:
    return f"{m.method}" if isinstance(m, SipRequest) else str(m.status)


def test_every_message_in_order_on_its_leg(seed) -> None:
    msgs = seed[0]
    got = [
        (m.origin.frames[0], m.origin.transport, _label(m), m.call_id, m.origin.src, m.origin.dst)
        for m in msgs
    ]
    pbx_tcp, pbx_tls = Endpoint("via_addr", 5060), Endpoint("via_addr", 5080)
    assert got == [
        (67, Transport.TCP, "INVITE", A_CALL, CALLER, pbx_tcp),
        (126, Transport.TCP, "100", A_CALL, pbx_tcp, CALLER),
        (228, Transport.TLS, "INVITE", B_CALL, pbx_tls, TRUNK),
        (288, Transport.TLS, "100", B_CALL, TRUNK, pbx_tls),
        (303, Transport.TLS, "407", B_CALL, TRUNK, pbx_tls),
        (315, Transport.TLS, "ACK", B_CALL, pbx_tls, TRUNK),
        (331, Transport.TLS, "INVITE", B_CALL, pbx_tls, TRUNK),
        (378, Transport.TLS, "100", B_CALL, TRUNK, pbx_tls),
        (393, Transport.TLS, "200", B_CALL, TRUNK, pbx_tls),
        (449, Transport.TLS, "ACK", B_CALL, pbx_tls, TRUNK),
        (541, Transport.TCP, "200", A_CALL, pbx_tcp, CALLER),
        (580, Transport.TCP, "ACK", A_CALL, CALLER, pbx_tcp),
    ]
    # the authenticated INVITE carries the answer to the 407 challenge (RFC 3261 §22.3)
    assert (msgs[6].headers.get("proxy-authorization") or "").startswith("Digest username=")
    assert [m.cseq.seq for m in msgs[2:10] if m.cseq] == [2070461] * 4 + [2070462] * 4


def test_messages_are_unescaped_unindented_crlf(seed) -> None:
    first = seed[0][0]
    assert first.raw.startswith(b"INVITE sip:to_number@sometelco.com:5060 SIP/2.0\r\nVia: ")
    assert b"&gt;" not in first.raw and b"<sip:to_number@sometelco.com:5060>" in first.raw
    assert b"\n   " not in first.raw and b"\r\n\r\nv=0\r\n" in first.raw
    assert first.body.endswith(b"a=sendrecv\r\n") and not first.problems


def test_times_take_the_date_of_a_nearby_line(seed) -> None:
    msgs = seed[0]
    assert msgs[0].ts == iso_ts("2019-03-22 09:55:07.936234")
    assert msgs[-1].ts == iso_ts("2019-03-22 09:55:14.459247")
    assert [m.ts for m in msgs] == sorted(m.ts for m in msgs)


def _states(events: list[ChannelEvent], channel: str, kind: EventKind) -> list[tuple[str, str]]:
    return [(e.old or "", e.new or "") for e in events if e.channel == channel and e.kind is kind]


def test_channel_state_sequences(seed) -> None:
    events = seed[1]
    assert _states(events, INBOUND, EventKind.STATE_CHANGE) == [
        ("CS_NEW", "CS_INIT"),
        ("CS_INIT", "CS_ROUTING"),
        ("CS_ROUTING", "CS_EXECUTE"),
    ]
    assert _states(events, OUTBOUND, EventKind.STATE_CHANGE) == [
        ("CS_NEW", "CS_INIT"),
        ("CS_INIT", "CS_ROUTING"),
        ("CS_ROUTING", "CS_CONSUME_MEDIA"),
        ("CS_CONSUME_MEDIA", "CS_EXCHANGE_MEDIA"),
    ]
    # the article pastes the Pre-Answer lines twice (lines 510-511 and 524-525)
    inbound_calls = sorted(_states(events, INBOUND, EventKind.CALLSTATE_CHANGE))
    assert inbound_calls == sorted(
        [("DOWN", "RINGING"), ("RINGING", "EARLY"), ("RINGING", "EARLY"), ("EARLY", "ACTIVE")]
    )
    assert _states(events, OUTBOUND, EventKind.CALLSTATE_CHANGE) == [("DOWN", "ACTIVE")]
    sofia = [e.new for e in events if e.kind is EventKind.SOFIA_STATE and e.channel == OUTBOUND]
    assert sofia == ["calling", "calling", "completing", "ready"]
    news = {e.channel: e.uuid for e in events if e.kind is EventKind.NEW_CHANNEL}
    assert news == {
        INBOUND: "a8a2003f-5755-40fe-ab63-aab2f5264886",
        OUTBOUND: "cc1ae238-9efd-4f51-93e9-05abd48bea4d",
    }


def test_dialplan_decision(seed) -> None:
    plan = [e for e in seed[1] if e.kind is EventKind.DIALPLAN]
    assert all(e.channel == INBOUND for e in plan)
    assert plan[0].new == "public" and plan[0].old == "from_number <from_number>->to_number"
    assert any(e.new and e.new.startswith("Regex (PASS) [dialplan_cutsom]") for e in plan)
    bridge = [e for e in plan if e.new and e.new.startswith("Action bridge(")]
    assert len(bridge) == 1 and bridge[0].peer == OUTBOUND and bridge[0].line == 148
    origin = [e for e in seed[1] if e.kind is EventKind.ORIGINATE]
    assert [(e.channel, e.new, e.peer) for e in origin] == [(INBOUND, "Success", OUTBOUND)]


def test_channels_tie_to_their_dialogs(seed) -> None:
    msgs, events = seed[0], seed[1]
    linked = link_channels(events, msgs)
    ties = {(e.channel, e.call_id, e.link) for e in linked}
    assert ties == {(INBOUND, A_CALL, "name+trace"), (OUTBOUND, B_CALL, "name+trace")}


def test_stats_and_findings(seed) -> None:
    msgs, events, stats, findings = seed
    assert stats.format == "freeswitch" and stats.frames == 593
    # every line is a message line, an event line, or counted as skipped
    message_lines = sum(len(m.origin.frames) for m in msgs)
    assert stats.skipped["non_sip_lines"] + len(events) + message_lines <= 593
    assert [f.code for f in findings] == ["log.html_escaped"]
