"""Blind transfer (RFC 3515 REFER) in the sans-IO B2BUA core, driven by hand.

The callee's side (B, 127.0.0.1:5080) REFERs the caller (A, :5070) to user 200, which the
routes send to C (:5090). Messages are written as a UA would send them; time is passed in.
Checked against RFC 3515 §2.4 (202, NOTIFY with message/sipfrag, Event: refer, final
NOTIFY terminated), RFC 3892 §3 (Referred-By copied to the new INVITE) and RFC 5589 §6.1
(the transferor's BYE ends only its own leg); the call keeps all three Call-IDs.
"""

from __future__ import annotations

from dataclasses import dataclass

from test_b2bua_core import SDP, A, B, answer, invite, sends

from sipflow.b2bua.config import parse_config
from sipflow.b2bua.core import B2BUA, LINGER, CallEvent, EventKind
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.message import SipRequest, SipResponse
from sipflow.sip.transaction import MS

C = Endpoint("127.0.0.1", 5090)
UDP = Transport.UDP
SDP_C = SDP.replace(b"o=a 1 1", b"o=c 7 7").replace(b"4000", b"4444")


def core(**route2: object) -> B2BUA:
    cfg = {
        "b2bua": {"seed": 3},
        "listen": [{"transport": "udp", "host": "127.0.0.1", "port": 5060}],
        "route": [
            {"match": r"^(1\d+)$", "target": r"sip:\1@127.0.0.1:5080"},
            {"match": r"^(2\d+)$", "target": r"sip:\1@127.0.0.1:5090", **route2},
        ],
    }
    return B2BUA(parse_config(cfg))


def kinds(out: list[tuple[Endpoint, SipRequest | SipResponse]]) -> list[tuple[Endpoint, object]]:
    return [(d, m.method if isinstance(m, SipRequest) else m.status) for d, m in out]


def ok(req: SipRequest, status: int = 200, reason: str = "OK") -> bytes:
    """A response to an in-dialog request (its To already has our tag)."""
    h = req.headers
    lines = [f"SIP/2.0 {status} {reason}", f"Via: {h.get('via')}", f"From: {h.get('from')}"]
    lines += [f"To: {h.get('to')}", f"Call-ID: {req.call_id}", f"CSeq: {h.get('cseq')}"]
    body = SDP if req.method == "INVITE" and status < 300 else b""
    lines += ["Content-Type: application/sdp"] if body else []
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def in_dialog(
    method: str,
    call_id: str,
    from_: str,
    to: str,
    cseq: int,
    port: int,
    extra: tuple[str, ...] = (),
    branch: str = "",
) -> bytes:
    lines = [
        f"{method} sip:b2bua@127.0.0.1:5060 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch or method.lower()}{cseq}",
        "Max-Forwards: 70",
        f"From: {from_}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:ua@127.0.0.1:{port}>",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


Sent = list[tuple[Endpoint, SipRequest | SipResponse]]
FROM_B = "<sip:100@127.0.0.1:5080>;tag=btag"
FROM_A = "<sip:alice@10.9.9.9>;tag=atag"
DEFAULT_REFER = ("Refer-To: <sip:200@127.0.0.1:5060>", "Referred-By: <sip:bob@b.example>")


def refer_from_b(
    c: B2BUA, binv: SipRequest, now: int, *extra: str, cseq: int = 7, branch: str = ""
) -> Sent:
    """REFER from B inside the B leg's dialog (To: our From with its tag)."""
    to = binv.headers.get("from") or ""
    data = in_dialog(
        "REFER", binv.call_id or "", FROM_B, to, cseq, 5080, extra or DEFAULT_REFER, branch
    )
    return sends(c.receive(data, B, UDP, now))


@dataclass
class Answered:
    c: B2BUA
    binv: SipRequest
    a200: SipResponse

    def refer(self, now: int, *extra: str, cseq: int = 7) -> Sent:
        return refer_from_b(self.c, self.binv, now, *extra, cseq=cseq)

    def bye_from_a(self, now: int) -> Sent:
        to = self.a200.headers.get("to") or ""
        data = in_dialog("BYE", "a-call@10.9.9.9", FROM_A, to, 2, 5070)
        return sends(self.c.receive(data, A, UDP, now))

    def bye_from_b(self, now: int) -> Sent:
        to = self.binv.headers.get("from") or ""
        data = in_dialog("BYE", self.binv.call_id or "", FROM_B, to, 9, 5080)
        return sends(self.c.receive(data, B, UDP, now))


def answered(c: B2BUA) -> Answered:
    out = sends(c.receive(invite(), A, UDP, 0))
    binv = out[1][1]
    assert isinstance(binv, SipRequest)
    out = sends(c.receive(answer(binv, 200, "OK", body=SDP), B, UDP, 10 * MS))
    a200 = out[1][1]
    assert isinstance(a200, SipResponse) and a200.status == 200
    ack = in_dialog("ACK", "a-call@10.9.9.9", FROM_A, a200.headers.get("to") or "", 1, 5070)
    assert c.receive(ack, A, UDP, 11 * MS) == []
    return Answered(c, binv, a200)


def sipfrag(out: Sent) -> list[tuple[bytes, str]]:
    """(body, Subscription-State) of each NOTIFY sent."""
    return [
        (m.body, m.headers.get("subscription-state") or "")
        for _, m in out
        if isinstance(m, SipRequest) and m.method == "NOTIFY"
    ]


def test_blind_transfer_joins_the_target_to_the_caller() -> None:
    call = answered(core())
    c = call.c
    out = call.refer(100 * MS)
    assert kinds(out) == [(B, 202), (B, "NOTIFY"), (C, "INVITE")]
    accepted, notify, cinv = (m for _, m in out)
    assert accepted.headers.get("contact")  # RFC 3515 §2.4.2 / RFC 6665 §4.2.1
    assert isinstance(notify, SipRequest) and isinstance(cinv, SipRequest)
    # RFC 3515 §2.4.4-§2.4.6: the first NOTIFY, right after the 202
    assert notify.call_id == call.binv.call_id and notify.headers.get("event") == "refer;id=7"
    assert notify.headers.get("content-type") == "message/sipfrag;version=2.0"
    assert sipfrag(out) == [(b"SIP/2.0 100 Trying\r\n", "active;expires=60")]
    # the new leg: own Call-ID, the caller's identity and SDP, Referred-By copied (RFC 3892)
    assert cinv.uri == "sip:200@127.0.0.1:5090"
    assert cinv.call_id not in ("a-call@10.9.9.9", call.binv.call_id)
    assert cinv.headers.get("referred-by") == "<sip:bob@b.example>"
    assert cinv.from_ is not None and cinv.from_.display == "Alice" and cinv.body == SDP
    out = sends(c.receive(answer(cinv, 180, "Ringing"), C, UDP, 120 * MS))
    assert out == []  # the caller's call is up: nothing to relay
    out = sends(c.receive(answer(cinv, 200, "OK", tag="ctag", body=SDP_C), C, UDP, 200 * MS))
    assert kinds(out) == [(C, "ACK"), (A, "INVITE"), (B, "NOTIFY")]
    reinvite = out[1][1]
    assert isinstance(reinvite, SipRequest) and reinvite.call_id == "a-call@10.9.9.9"
    assert reinvite.body == SDP_C and reinvite.to_tag == "atag"  # media now goes to C
    assert sipfrag(out) == [(b"SIP/2.0 200 OK\r\n", "terminated;reason=noresource")]
    out = sends(c.receive(ok(reinvite), A, UDP, 210 * MS))
    assert kinds(out) == [(A, "ACK")]
    # RFC 5589 §6.1: the transferor hangs up; only its own leg ends
    assert kinds(call.bye_from_b(220 * MS)) == [(B, 200)]
    assert c.calls and not c.finished
    # the caller hangs up: the target gets the BYE, not the transferor
    out = call.bye_from_a(2000 * MS)
    assert kinds(out) == [(A, 200), (C, "BYE")]
    (done,) = c.finished
    assert [leg.call_id for leg in done.legs()] == [
        "a-call@10.9.9.9",
        call.binv.call_id,
        cinv.call_id,
    ]
    assert (done.outcome, done.final_code, done.ended_by) == ("answered", 200, "caller")
    (xfer,) = done.transfers
    assert (xfer.refer_to, xfer.final_code, xfer.leg) == ("sip:200@127.0.0.1:5060", 200, done.b)


def test_transfer_events_tie_the_new_channel_to_the_caller() -> None:
    call = answered(core())
    c = call.c
    (a,) = [x.a for x in c.calls.values()]
    assert a is not None
    acts = c.receive(
        in_dialog(
            "REFER",
            call.binv.call_id or "",
            FROM_B,
            call.binv.headers.get("from") or "",
            7,
            5080,
            ("Refer-To: <sip:200@127.0.0.1:5060>",),
        ),
        B,
        UDP,
        0,
    )
    cinv = sends(acts)[2][1]
    assert isinstance(cinv, SipRequest)
    # no Referred-By in the REFER: the transferor's URI (RFC 3892 §3 lets the referee add it)
    assert cinv.headers.get("referred-by") == "<sip:100@127.0.0.1:5080>"
    acts += c.receive(answer(cinv, 200, "OK", tag="ctag", body=SDP_C), C, UDP, 5 * MS)
    acts += c.receive(
        in_dialog(
            "BYE", call.binv.call_id or "", FROM_B, call.binv.headers.get("from") or "", 9, 5080
        ),
        B,
        UDP,
        6 * MS,
    )
    evs = [x for x in acts if isinstance(x, CallEvent)]
    (new,) = [e for e in evs if e.kind is EventKind.NEW_CHANNEL]
    assert new.detail == cinv.call_id and new.channel == "sofia/external/200@127.0.0.1:5090"
    # FreeSWITCH's "Originate Resulted in Success: [<new channel>]" on the caller's channel
    orig = [(e.leg, e.new, e.detail) for e in evs if e.kind is EventKind.ORIGINATE]
    assert orig == [(a.uuid, "Success", new.channel)]
    hang = [(e.channel, e.new) for e in evs if e.kind is EventKind.HANGUP]
    assert hang == [("sofia/external/100@127.0.0.1:5080", "BLIND_TRANSFER")]


def test_busy_target_is_reported_and_the_call_stays_with_the_transferor() -> None:
    call = answered(core())
    c = call.c
    cinv = call.refer(0)[2][1]
    assert isinstance(cinv, SipRequest)
    out = sends(c.receive(answer(cinv, 486, "Busy Here", tag="ctag"), C, UDP, 5 * MS))
    assert kinds(out) == [(C, "ACK"), (B, "NOTIFY")]
    assert sipfrag(out) == [(b"SIP/2.0 486 Busy Here\r\n", "terminated;reason=noresource")]
    out = call.bye_from_a(1000 * MS)  # still bridged to B
    assert kinds(out) == [(A, 200), (B, "BYE")]
    (done,) = c.finished
    assert done.transfers[0].final_code == 486 and done.outcome == "answered"


def test_transferor_gone_and_target_failing_ends_the_call() -> None:
    call = answered(core())
    c = call.c
    cinv = call.refer(0)[2][1]
    assert isinstance(cinv, SipRequest)
    assert kinds(call.bye_from_b(1 * MS)) == [(B, 200)]  # hangs up right after the 202
    out = sends(c.receive(answer(cinv, 404, "Not Found", tag="ctag"), C, UDP, 5 * MS))
    assert kinds(out) == [(C, "ACK"), (A, "BYE")]  # no NOTIFY: the transferor left
    (done,) = c.finished
    assert done.ended_by == "callee" and done.transfers[0].final_code == 404


def test_refer_refusals() -> None:
    call = answered(core())
    assert kinds(call.refer(0, "Referred-By: <sip:bob@b>")) == [(B, 400)]  # RFC 3515 §2.4.1
    two = ("Refer-To: <sip:200@x>", "Refer-To: <sip:201@x>")
    assert kinds(call.refer(0, *two, cseq=8)) == [(B, 400)]
    repl = "Refer-To: <sip:200@x?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>"
    assert kinds(call.refer(0, repl, cseq=9)) == [(B, 501)]
    assert kinds(call.refer(0, cseq=10))[:2] == [(B, 202), (B, "NOTIFY")]
    assert kinds(call.refer(0, cseq=11)) == [(B, 491)]  # one transfer at a time
    # a retransmitted REFER is absorbed by its transaction (the 202 again, nothing new)
    assert kinds(call.refer(1 * MS, cseq=10)) == [(B, 202)]


def test_refer_before_answer_is_refused() -> None:
    c = core()
    out = sends(c.receive(invite(), A, UDP, 0))
    binv = out[1][1]
    assert isinstance(binv, SipRequest)
    c.receive(answer(binv, 180, "Ringing"), B, UDP, 1 * MS)
    assert kinds(refer_from_b(c, binv, 2 * MS)) == [(B, 403)]


def test_unroutable_target_gets_a_final_notify_404() -> None:
    call = answered(core())
    out = call.refer(0, "Refer-To: <sip:999@127.0.0.1>")
    assert kinds(out) == [(B, 202), (B, "NOTIFY"), (B, "NOTIFY")]
    assert [b for b, _ in sipfrag(out)] == [b"SIP/2.0 100 Trying\r\n", b"SIP/2.0 404 Not Found\r\n"]


def test_ringing_target_is_cancelled_at_the_route_timeout() -> None:
    call = answered(core(timeout=2))
    c = call.c
    _, (_, notify), (_, cinv) = call.refer(0)
    assert isinstance(cinv, SipRequest) and isinstance(notify, SipRequest)
    c.receive(ok(notify), B, UDP, 1 * MS)  # else Timer E re-sends it meanwhile
    c.receive(answer(cinv, 180, "Ringing", tag="ctag"), C, UDP, 5 * MS)
    out = sends(c.expire(2000 * MS))
    assert kinds(out) == [(C, "CANCEL")]
    cancel = out[0][1]
    assert isinstance(cancel, SipRequest)
    c.receive(answer(cancel, 200, "OK", tag="ctag"), C, UDP, 2001 * MS)
    out = sends(c.receive(answer(cinv, 487, "Request Terminated", tag="ctag"), C, UDP, 2002 * MS))
    assert kinds(out) == [(C, "ACK"), (B, "NOTIFY")]
    assert sipfrag(out)[0][0] == b"SIP/2.0 487 Request Terminated\r\n"


def test_caller_hanging_up_cancels_a_ringing_target() -> None:
    call = answered(core())
    c = call.c
    cinv = call.refer(0)[2][1]
    assert isinstance(cinv, SipRequest)
    c.receive(answer(cinv, 180, "Ringing", tag="ctag"), C, UDP, 5 * MS)
    out = call.bye_from_a(10 * MS)
    assert kinds(out) == [(A, 200), (B, "BYE"), (C, "CANCEL")]
    late = sends(c.receive(answer(cinv, 200, "OK", tag="ctag", body=SDP_C), C, UDP, 11 * MS))
    assert kinds(late) == [(C, "ACK"), (C, "BYE")]  # the 2xx crossed the CANCEL (§15)


def test_refer_from_the_caller_is_relayed() -> None:
    call = answered(core())
    to = call.a200.headers.get("to") or ""
    refer = in_dialog(
        "REFER",
        "a-call@10.9.9.9",
        "<sip:alice@10.9.9.9>;tag=atag",
        to,
        2,
        5070,
        ("Refer-To: <sip:200@127.0.0.1>",),
    )
    out = sends(call.c.receive(refer, A, UDP, 0))
    assert kinds(out) == [(B, "REFER")]


def test_nothing_is_kept_once_calls_ended_and_lingered() -> None:
    """Memory: every per-call container empties after LINGER (``finished`` aside), for a
    plain call and a transferred one, and ``on_finished`` takes calls instead of the list."""
    call = answered(core())
    c = call.c
    taken: list[object] = []
    c.on_finished = taken.append
    cinv = call.refer(0)[2][1]
    assert isinstance(cinv, SipRequest)
    out = sends(c.receive(answer(cinv, 200, "OK", tag="ctag", body=SDP_C), C, UDP, 5 * MS))
    c.receive(ok(out[1][1]), A, UDP, 6 * MS)  # type: ignore[arg-type]
    for _, m in out:
        if isinstance(m, SipRequest) and m.method == "NOTIFY":
            c.receive(ok(m), B, UDP, 6 * MS)
    call.bye_from_b(7 * MS)
    for _, m in call.bye_from_a(8 * MS):
        if isinstance(m, SipRequest) and m.method == "BYE":
            c.receive(ok(m), C, UDP, 9 * MS)
    assert len(taken) == 1 and c.finished == []
    now = 9 * MS
    while (deadline := c.next_deadline()) is not None and deadline <= 9 * MS + 2 * LINGER:
        now = deadline
        c.expire(now)
    assert now >= 8 * MS + LINGER
    assert {k: len(v) for k, v in c.sizes().items()} == dict.fromkeys(c.sizes(), 0)
