"""The sans-IO B2BUA core driven by hand: bytes and ``now`` in, actions out.

Small synthetic messages (as a UA would send them); time is passed in, so RFC 3261
timers are checked to the nanosecond without sleeping.
"""

from __future__ import annotations

import re

from sipflow.b2bua.config import parse_config
from sipflow.b2bua.core import B2BUA, CallEvent, EventKind, Send
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.message import SipRequest, SipResponse, parse_message
from sipflow.sip.transaction import MS, T1

A = Endpoint("127.0.0.1", 5070)
B = Endpoint("127.0.0.1", 5080)
SDP = (
    b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)


def core(**top: object) -> B2BUA:
    cfg = {
        "b2bua": {"seed": 1, **top},
        "listen": [{"transport": "udp", "host": "127.0.0.1", "port": 5060}],
        "route": [{"match": r"^(1\d+)$", "target": r"sip:\1@127.0.0.1:5080"}],
    }
    return B2BUA(parse_config(cfg))


def invite(user: str = "100", call_id: str = "a-call@10.9.9.9", extra: str = "") -> bytes:
    head = (
        f"INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKaaa1\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Alice" <sip:alice@10.9.9.9>;tag=atag\r\n'
        f"To: <sip:{user}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:alice@127.0.0.1:5070>\r\n"
        f"{extra}"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n"
    )
    return head.encode() + SDP


def sends(actions: list[object]) -> list[tuple[Endpoint, SipRequest | SipResponse]]:
    out = []
    for a in actions:
        if isinstance(a, Send):
            m = parse_message(a.data)
            assert not m.problems, m.problems
            out.append((a.dst, m))
    return out


def answer(
    req: SipRequest, status: int, reason: str, tag: str = "btag", body: bytes = b""
) -> bytes:
    h = req.headers
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {h.get('via')}", f"From: {h.get('from')}", f"To: {h.get('to')};tag={tag}"]
    lines += [f"Call-ID: {req.call_id}", f"CSeq: {h.get('cseq')}"]
    lines += ["Contact: <sip:bob@127.0.0.1:5080>"] if status < 300 else []
    lines += ["Content-Type: application/sdp"] if body else []
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def start_call(c: B2BUA, now: int = 0) -> SipRequest:
    out = sends(c.receive(invite(), A, Transport.UDP, now))
    assert [(d, getattr(m, "status", None) or m.method) for d, m in out] == [
        (A, 100),
        (B, "INVITE"),
    ]
    binv = out[1][1]
    assert isinstance(binv, SipRequest)
    return binv


def test_answered_call_hides_topology_and_maps_both_legs() -> None:
    c = core()
    binv = start_call(c)
    # topology hiding: nothing of the A leg's identity reaches B (RFC 3261 §12 per leg)
    text = binv.raw.decode()
    assert "a-call@10.9.9.9" not in text and "atag" not in text and "5070" not in text
    assert "X-CID" not in text
    assert binv.uri == "sip:100@127.0.0.1:5080" and binv.body == SDP
    assert binv.from_ is not None and binv.from_.display == "Alice"
    out = sends(c.receive(answer(binv, 180, "Ringing"), B, Transport.UDP, 10 * MS))
    assert [(d, m.status) for d, m in out if isinstance(m, SipResponse)] == [(A, 180)]
    a180 = out[0][1]
    assert a180.call_id == "a-call@10.9.9.9" and a180.to_tag and a180.to_tag != "btag"
    out = sends(c.receive(answer(binv, 200, "OK", body=SDP), B, Transport.UDP, 20 * MS))
    kinds = [(d, getattr(m, "method", None) or m.status) for d, m in out]
    assert kinds == [(B, "ACK"), (A, 200)]
    assert out[1][1].body == SDP and out[1][1].to_tag == a180.to_tag
    ack = out[0][1]
    assert isinstance(ack, SipRequest) and ack.top_via and ack.top_via.branch != binv.top_via.branch  # type: ignore[union-attr]


def test_x_cid_header_when_configured() -> None:
    binv = start_call(core(x_cid=True))
    assert binv.headers.get("X-CID") == "a-call@10.9.9.9"


def test_2xx_is_retransmitted_to_the_caller_until_ack() -> None:
    c = core()
    binv = start_call(c)
    c.receive(answer(binv, 200, "OK", body=SDP), B, Transport.UDP, 0)
    # RFC 3261 §13.3.1.4: T1, then 2*T1, ...
    assert c.next_deadline() == T1
    again = sends(c.expire(T1))
    assert [(d, m.status) for d, m in again if isinstance(m, SipResponse)] == [(A, 200)]
    assert c.next_deadline() == T1 + 2 * T1
    tag = again[0][1].to_tag
    ack = "\r\n".join(
        [
            "ACK sip:b2bua@127.0.0.1:5060 SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack",
            "Max-Forwards: 70",
            "From: <sip:alice@10.9.9.9>;tag=atag",
            f"To: <sip:100@127.0.0.1>;tag={tag}",
            "Call-ID: a-call@10.9.9.9",
            "CSeq: 1 ACK",
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()
    assert c.receive(ack, A, Transport.UDP, T1 + 1) == []
    assert sends(c.expire(3 * T1)) == []


def test_invite_retransmitted_by_timer_a_then_408_at_timer_b() -> None:
    c = core(no_answer_timeout=600)
    binv = start_call(c)
    times = []
    now = 0
    for _ in range(6):
        deadline = c.next_deadline()
        assert deadline is not None
        now = deadline
        out = sends(c.expire(now))
        assert [m.raw for _, m in out] == [binv.raw]  # the same bytes (§17.1.1.2)
        times.append(now)
    assert times == [T1 * (2**n - 1) for n in range(1, 7)]
    out = sends(c.expire(64 * T1))  # Timer B
    assert [(d, m.status) for d, m in out if isinstance(m, SipResponse)] == [(A, 408)]
    assert c.finished[0].outcome == "no-answer"


def test_no_answer_timer_cancels_after_ringing_and_sends_408() -> None:
    c = core(no_answer_timeout=2)
    binv = start_call(c)
    c.receive(answer(binv, 180, "Ringing"), B, Transport.UDP, 10 * MS)
    out = sends(c.expire(2000 * MS))
    got = [(d, getattr(m, "method", None) or m.status) for d, m in out]
    assert (B, "CANCEL") in got and (A, 408) in got


def test_cancel_before_answer_gives_487_and_cancels_b() -> None:
    c = core()
    binv = start_call(c)
    c.receive(answer(binv, 180, "Ringing"), B, Transport.UDP, 10 * MS)
    cancel = invite().split(b"\r\nContent-Type")[0].replace(b"INVITE", b"CANCEL")
    cancel = cancel.replace(b"CSeq: 1 CANCEL", b"CSeq: 1 CANCEL") + b"\r\nContent-Length: 0\r\n\r\n"
    out = sends(c.receive(cancel, A, Transport.UDP, 20 * MS))
    got = [(d, getattr(m, "method", None) or m.status) for d, m in out]
    assert got == [(A, 200), (B, "CANCEL"), (A, 487)]
    assert c.finished[0].outcome == "cancelled"


def test_busy_is_acked_and_mapped_back() -> None:
    c = core()
    binv = start_call(c)
    out = sends(c.receive(answer(binv, 486, "Busy Here"), B, Transport.UDP, 5 * MS))
    got = [(d, getattr(m, "method", None) or m.status) for d, m in out]
    assert got == [(B, "ACK"), (A, 486)]
    ack = out[0][1]
    assert ack.top_via is not None and ack.top_via.branch == binv.top_via.branch  # type: ignore[union-attr]
    # a retransmitted 486 is answered with the same ACK (§17.1.1.2), not relayed again
    again = sends(c.receive(answer(binv, 486, "Busy Here"), B, Transport.UDP, 6 * MS))
    assert [m.raw for _, m in again] == [ack.raw]


def test_no_route_is_404() -> None:
    c = core()
    out = sends(c.receive(invite("999"), A, Transport.UDP, 0))
    assert [(d, getattr(m, "status", 0)) for d, m in out] == [(A, 100), (A, 404)]


def test_bad_input_400_drop_and_size_limit() -> None:
    c = core()
    no_cid = re.sub(rb"Call-ID: [^\r]*\r\n", b"", invite())
    out = [
        parse_message(a.data) for a in c.receive(no_cid, A, Transport.UDP, 0) if isinstance(a, Send)
    ]
    assert [(m.status, m.reason) for m in out] == [(400, "Missing Call-Id header")]  # type: ignore[union-attr]
    assert out[0].call_id is None and out[0].from_tag == "atag"
    assert c.receive(b"\x16\x03\x01 not sip at all\r\n\r\n", A, Transport.UDP, 0) == []
    big = invite(extra="X-Pad: " + "a" * 70_000 + "\r\n")
    assert c.receive(big, A, Transport.UDP, 0) == []
    assert c.stats.dropped == {"answered-400": 1, "unparseable": 1, "too-large": 1}
    # other calls are not disturbed
    start_call(c, 1)


def test_events_tell_the_channel_story() -> None:
    c = core()
    binv = start_call(c)
    evs: list[CallEvent] = []
    for status, reason, body in ((180, "Ringing", b""), (200, "OK", SDP)):
        acts = c.receive(answer(binv, status, reason, body=body), B, Transport.UDP, 0)
        evs += [a for a in acts if isinstance(a, CallEvent)]
    kinds = [(e.kind, e.new) for e in evs]
    assert (EventKind.ORIGINATE, "Success") in kinds
    assert kinds.count((EventKind.CALLSTATE, "ACTIVE")) == 2
