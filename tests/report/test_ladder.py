"""LadderModel: lanes, arrows, retransmission flags, linked legs and channel marks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from report_helpers import LONG_CALL, SAMPLE, corpus, full, tshark_fields

import sipflow
from sipflow.ingest.types import Endpoint, Transport
from sipflow.report.ladder import TraceIndex, build_ladder, find_call, ladder_of_messages
from sipflow.sip.message import Origin, SipMessage, parse_message
from sipflow.trace import Trace


def _tshark_labels(path: Path, call_id: str) -> list[str]:
    rows = tshark_fields(path, f'sip.Call-ID == "{call_id}"', "sip.Method", "sip.Status-Code")
    return [method or status for method, status in rows]


def test_one_arrow_per_message_in_wire_order(sample_trace: Trace) -> None:
    index = TraceIndex(sample_trace)
    assert len(sample_trace.call_records) == 5
    for i, call in enumerate(sample_trace.call_records):
        model = build_ladder(sample_trace, i, index)
        expected = _tshark_labels(SAMPLE, call.call_ids[0])
        got = [a.label.split()[0] for a in model.arrows]
        assert got == expected, call.call_ids
        assert len(model.arrows) == call.messages
        assert [a.message for a in model.arrows] == sorted(a.message for a in model.arrows)


def test_lanes_caller_first_and_deltas(sample_trace: Trace) -> None:
    model = build_ladder(sample_trace, 0)
    assert [lane.key for lane in model.lanes] == ["127.0.0.1:5070", "127.0.0.1:5060"]
    first = model.arrows[0]
    assert (first.src, first.dst, first.label, first.delta) == (0, 1, "INVITE", 0)
    for prev, a in zip(model.arrows, model.arrows[1:], strict=False):
        assert a.delta == a.ts - prev.ts >= 0
    assert model.start == first.ts


def test_sdp_summary_on_offer_and_answer(sample_trace: Trace) -> None:
    model = build_ladder(sample_trace, 0)
    sdp = {a.label: a.sdp for a in model.arrows if a.sdp}
    assert sdp == {"INVITE": "offer: PCMU/8000", "200 OK": "answer: PCMU/8000"}


def test_long_call_503_messages(long_trace: Trace) -> None:
    assert len(long_trace.call_records) == 1
    model = build_ladder(long_trace, 0)
    n = len(tshark_fields(LONG_CALL, "sip", "frame.number"))
    assert len(model.arrows) == n == 503
    assert model.retransmissions == 0
    info = tshark_fields(LONG_CALL, 'sip.CSeq.method == "INFO"', "frame.number")
    assert sum(1 for a in model.arrows if a.method == "INFO") == len(info) == 2 * 248


def test_retransmissions_match_records_and_tshark() -> None:
    path = corpus("goffinet__voip-extension2downata.pcap")
    trace = full(path)
    flagged: set[int] = set()
    for i, call in enumerate(trace.call_records):
        model = build_ladder(trace, i)
        assert model.retransmissions == call.retransmissions
        flagged |= {a.frames[-1] for a in model.arrows if a.retransmission}
    assert flagged
    resend = {int(r[0]): r[1] for r in tshark_fields(path, "sip.resend == 1", "frame.number",
                                                     "sip.Via.branch")}  # fmt: skip
    # every copy we call a retransmission Wireshark calls a resend too; the resends we do
    # not flag carry a Via branch not seen before (new transactions, RFC 3261 §17.1.3).
    assert flagged <= set(resend)
    branches = {r[0]: r[1] for r in tshark_fields(path, "sip", "frame.number", "sip.Via.branch")}
    for frame in set(resend) - flagged:
        earlier = {b for f, b in branches.items() if int(f) < frame}
        assert branches[str(frame)] not in earlier


def test_freeswitch_legs_tied_by_channel_events(fs_trace: Trace) -> None:
    model = build_ladder(fs_trace, 0)
    assert len(model.call_ids) == 2
    assert model.call_ids[0] == fs_trace.call_records[0].call_ids[0]
    (note,) = model.legs  # the correlation's link, carried by the log's originate line
    assert note.rule == "pbx_log" and note.role == "b-leg" and note.confidence is not None
    assert note.linked_to == model.call_ids[0] and note.call_id == model.call_ids[1]
    assert any("originate" in e and "log line" in e for e in model.evidence)
    assert len(model.arrows) == len(fs_trace.message_list)  # both legs, every message
    labels = {lane.key: lane.label for lane in model.lanes}
    assert labels["caller_ip:35365"].startswith("X-Lite")
    assert labels["ip_addr:5061"] == "ZenTrunk"
    # FreeSWITCH's two profiles (internal 5060, external 5080) are one element: one lane
    fs = next(lane for lane in model.lanes if lane.key == "via_addr:5060")
    assert fs.aliases == ("via_addr:5080",) and fs.label.startswith("FreeSWITCH")
    assert len(model.lanes) == 3
    assert model.marks
    assert {model.lanes[m.lane].key for m in model.marks} == {"via_addr:5060"}
    texts = [m.text for m in model.marks]
    assert "CS_NEW -> CS_INIT" in texts and "EARLY -> ACTIVE" in texts
    kinds = [r.kind for r in model.rows]
    assert kinds.count("arrow") == len(model.arrows) and kinds.count("mark") == len(model.marks)


def test_channel_events_tie_legs_without_correlation(fs_trace: Trace) -> None:
    """With no correlation (a Trace built by hand), the log's originate line still ties
    the legs: the note names the log line, and the lanes stay one per socket."""
    bare = replace(fs_trace, correlation=None, _frames={})
    model = build_ladder(bare, 0)
    assert len(model.call_ids) == 2
    (note,) = model.legs
    assert (note.role, note.rule, note.confidence) == ("log", "originate", None)
    assert "log line 575" in note.short and note.call_id == model.call_ids[1]
    assert len(model.arrows) == len(fs_trace.message_list)
    assert {"via_addr:5060", "via_addr:5080"} <= {lane.key for lane in model.lanes}


def test_stray_ack_of_same_call_is_kept(fs_trace: Trace) -> None:
    """The ACK to the trunk's 407 went to non-call activity; it is still this call's."""
    model = build_ladder(fs_trace, 1)
    acks = [a for a in model.arrows if a.label == "ACK"]
    assert len(acks) == 3


def _msg(text: str, src: Endpoint, dst: Endpoint, ts: int, frame: int) -> SipMessage:
    origin = Origin(0, (frame,), ts, src, dst, Transport.TCP)
    return parse_message(text.replace("\n", "\r\n").encode(), origin)


def test_tcp_client_port_merged_into_via_sent_by() -> None:
    """RFC 3261 §18.2.2: responses go to the Via sent-by; the client port is an alias."""
    a_client, a_listen, b = Endpoint("10.0.0.1", 40001), "10.0.0.1:5060", Endpoint("10.0.0.2", 5060)
    invite = (
        "INVITE sip:b@10.0.0.2 SIP/2.0\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK1\n"
        "From: <sip:a@x>;tag=1\nTo: <sip:b@x>\nCall-ID: c1\nCSeq: 1 INVITE\n"
        "User-Agent: phone-a\nContent-Length: 0\n\n"
    )
    ok = (
        "SIP/2.0 200 OK\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK1\n"
        "From: <sip:a@x>;tag=1\nTo: <sip:b@x>;tag=2\nCall-ID: c1\nCSeq: 1 INVITE\n"
        "Server: box-b\nContent-Length: 0\n\n"
    )
    msgs = [_msg(invite, a_client, b, 1, 1), _msg(ok, b, a_client, 2, 2)]
    model = ladder_of_messages(msgs)
    assert [(lane.key, lane.label, lane.aliases) for lane in model.lanes] == [
        (a_listen, "phone-a", ("10.0.0.1:40001",)),
        ("10.0.0.2:5060", "box-b", ()),
    ]
    assert [(a.src, a.dst) for a in model.arrows] == [(0, 1), (1, 0)]


def test_without_records_uses_kept_messages() -> None:
    trace = sipflow.analyze([SAMPLE], sipflow.Options(keep_messages=True, keep_records=False))
    model = build_ladder(trace, 3)
    assert [a.label for a in model.arrows][:2] == ["INVITE", "100 Trying"]
    assert len(model.arrows) == trace.call_records[3].messages


def test_without_messages_says_so() -> None:
    trace = sipflow.analyze([SAMPLE], sipflow.Options(keep_messages=False, keep_records=False))
    model = build_ladder(trace, 0)
    assert model.arrows == ()
    assert model.skipped  # counted, with a reason


@pytest.mark.parametrize(
    ("ident", "expected"), [("2", 2), ("1-24515@127.0.0.1", 3), ("1-24528", 4), ("1-2", None)]
)
def test_find_call(sample_trace: Trace, ident: str, expected: int | None) -> None:
    assert find_call(sample_trace, ident) == expected
