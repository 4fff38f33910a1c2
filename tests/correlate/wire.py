"""Small synthetic SIP calls for correlation tests, run through the real call builder.

How this works: :func:`call_messages` writes the bytes of one leg (INVITE / 180 / 200 /
ACK / BYE / 200, with extra headers on the INVITE and on its 2xx) between two endpoints
at given times; :func:`legs_of` parses the messages of several legs with the real SIP
parser, feeds them in time order to :class:`~sipflow.correlate.calls.CallBuilder`, judges
the SDP with ``media_for_call`` and returns the legs' facts, the way the pipeline does.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from sipflow.checks.sdp import media_for_call
from sipflow.correlate.calls import CallBuilder, CallRecord
from sipflow.correlate.legs import LegFacts, facts_of
from sipflow.ingest.types import Endpoint
from sipflow.sip.message import Origin, SipMessage, parse_message

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000


@dataclass(frozen=True)
class LegSpec:
    call_id: str
    src: tuple[str, int]
    dst: tuple[str, int]
    start_ms: float
    ring_ms: float | None = 100.0
    answer_ms: float | None = 2000.0
    bye_ms: float | None = 5000.0
    from_user: str = "1001"
    to_user: str = "2002"
    tag: str = ""
    invite_headers: tuple[str, ...] = ()
    ok_headers: tuple[str, ...] = ()
    media: tuple[str, int] | None = None
    """Media address of the offer (the answer uses port + 2); default: one per leg."""
    reject: int = 486


@dataclass
class _Seq:
    frame: int = 0
    out: list[SipMessage] = field(default_factory=list)


def _num(text: str) -> int:
    return zlib.crc32(text.encode())


def _sdp(ip: str, port: int, sess: int) -> str:
    return (
        f"v=0\r\no=- {sess} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n"
    )


def _msg(
    seq: _Seq, ts_ms: float, src: tuple[str, int], dst: tuple[str, int], head: str, body: str = ""
) -> None:
    text = head + ("Content-Type: application/sdp\r\n" if body else "")
    text += f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    seq.frame += 1
    origin = Origin(0, (seq.frame,), T0 + int(ts_ms * MS), Endpoint(*src), Endpoint(*dst))
    seq.out.append(parse_message(text.encode(), origin))


def call_messages(spec: LegSpec, seq: _Seq, sess: int) -> None:
    """One leg's messages appended to ``seq`` (frames numbered in creation order)."""
    a, b, cid = spec.src, spec.dst, spec.call_id
    tag = spec.tag or f"t{_num(cid)}"
    media = spec.media or ("198.51.100.7", 10000 + _num(cid) % 20000 * 2)
    via = f"Via: SIP/2.0/UDP {a[0]}:{a[1]};branch=z9hG4bK{_num(cid + 'i')}\r\n"
    frm = f"From: <sip:{spec.from_user}@{a[0]}>;tag={tag}\r\n"
    to = f"To: <sip:{spec.to_user}@{b[0]}>\r\n"
    to_tagged = f"To: <sip:{spec.to_user}@{b[0]}>;tag=r{tag}\r\n"
    common = f"Call-ID: {cid}\r\n"
    extra = "".join(h + "\r\n" for h in spec.invite_headers)
    invite = (
        f"INVITE sip:{spec.to_user}@{b[0]}:{b[1]} SIP/2.0\r\n{via}{frm}{to}{common}"
        f"CSeq: 1 INVITE\r\nContact: <sip:{spec.from_user}@{a[0]}:{a[1]}>\r\nMax-Forwards: 70\r\n"
        f"{extra}"
    )
    _msg(seq, spec.start_ms, a, b, invite, _sdp(media[0], media[1], sess))
    resp = f"{via}{frm}{to_tagged}{common}CSeq: 1 INVITE\r\n"
    if spec.ring_ms is not None:
        _msg(seq, spec.start_ms + spec.ring_ms, b, a, f"SIP/2.0 180 Ringing\r\n{resp}")
    if spec.answer_ms is None:
        done = spec.start_ms + 3000
        _msg(seq, done, b, a, f"SIP/2.0 {spec.reject} Busy Here\r\n{resp}")
        ack = f"ACK sip:{spec.to_user}@{b[0]}:{b[1]} SIP/2.0\r\n{via}{frm}{to_tagged}{common}"
        _msg(seq, done + 1, a, b, ack + "CSeq: 1 ACK\r\nMax-Forwards: 70\r\n")
        return
    ok = "".join(h + "\r\n" for h in spec.ok_headers)
    contact = f"Contact: <sip:{spec.to_user}@{b[0]}:{b[1]}>\r\n"
    answer = _sdp(media[0], media[1] + 2, sess + 1)
    t_ok = spec.start_ms + spec.answer_ms
    _msg(seq, t_ok, b, a, f"SIP/2.0 200 OK\r\n{resp}{contact}{ok}", answer)
    via2 = f"Via: SIP/2.0/UDP {a[0]}:{a[1]};branch=z9hG4bK{_num(cid + 'a')}\r\n"
    ack = f"ACK sip:{spec.to_user}@{b[0]}:{b[1]} SIP/2.0\r\n{via2}{frm}{to_tagged}{common}"
    _msg(seq, t_ok + 1, a, b, ack + "CSeq: 1 ACK\r\nMax-Forwards: 70\r\n")
    if spec.bye_ms is None:
        return
    via3 = f"Via: SIP/2.0/UDP {a[0]}:{a[1]};branch=z9hG4bK{_num(cid + 'b')}\r\n"
    bye = f"BYE sip:{spec.to_user}@{b[0]}:{b[1]} SIP/2.0\r\n{via3}{frm}{to_tagged}{common}"
    t_bye = spec.start_ms + spec.bye_ms
    _msg(seq, t_bye, a, b, bye + "CSeq: 2 BYE\r\nMax-Forwards: 70\r\n")
    _msg(seq, t_bye + 1, b, a, f"SIP/2.0 200 OK\r\n{via3}{frm}{to_tagged}{common}CSeq: 2 BYE\r\n")


def records_of(specs: list[LegSpec]) -> list[CallRecord]:
    seq = _Seq()
    for n, spec in enumerate(specs):
        call_messages(spec, seq, 1_000_000 + 10 * n)
    builder = CallBuilder()
    calls: list[CallRecord] = []
    for msg in sorted(seq.out, key=lambda m: m.ts):
        calls.extend(builder.feed(msg).calls)
    calls.extend(builder.finish().calls)
    return sorted(calls, key=lambda c: c.start)


def legs_of(specs: list[LegSpec]) -> list[LegFacts]:
    """Facts of each leg, in the order the calls started."""
    return [facts_of(c, media_for_call(c)) for c in records_of(specs)]
