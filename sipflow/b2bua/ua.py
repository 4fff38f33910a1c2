"""Built-in user agents, sans-IO: a scripted UAC and a UAS with per-user behaviours.

How this works: both are the B2BUA core with one leg. :class:`Uas` is a B2BUA whose
calls have only an A leg: instead of routing it plays the behaviour named by the
Request-URI user (``answer``, ``busy``, ``notfound``, ``ring`` forever, ``auth407``:
challenge first, then answer; ``transfer``: answer, then blind-transfer the caller with
a REFER to ``answer-carol`` and hang up once the final NOTIFY says the target answered,
RFC 5589 §6.1), with times scheduled on the core's timer. Mid-dialog re-INVITEs
(hold/unhold, a B2BUA's media update after a transfer) are answered by both UAs with SDP
mirroring the offer's direction (RFC 3264 §6.1: sendonly -> recvonly). :class:`Uac` is
a B2BUA whose calls have only a B leg: it places the calls of a :class:`CallPlan` (to
the B2BUA), then hangs up, cancels or puts the call on hold and back as the plan says.
Everything the transactions and dialogs need (retransmissions, ACKs, CANCEL, BYE) is
the core's.

Media (off unless :attr:`Talker.rtp_packets` is set, as the anchored regen scenario
does): once a call is answered each UA sends that many RTP packets of G.711 PCMU
(payload type 0, 20 ms: 160 samples of a tone, 440 Hz from the UAS, 660 Hz from the
UAC, at real 20 ms intervals on the core's timer) from the port its SDP named to the
port the other side's SDP named; the UAS protects them with the key of its a=crypto
answer when the offer was SDES (RFC 4568 §5.1). What the UAs receive is only counted.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from sipflow.b2bua import media
from sipflow.b2bua.config import Config, Listen, Route, parse_config
from sipflow.b2bua.core import (
    B2BUA,
    Action,
    Call,
    Leg,
    LegState,
)
from sipflow.b2bua.dialogs import Dialogs
from sipflow.b2bua.model import _Client, _hostport
from sipflow.errors import ParseError
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip import auth
from sipflow.sip.message import SipRequest, SipResponse
from sipflow.sip.transaction import MS, key_of


def sdp(user: str, ip: str, port: int, direction: str = "sendrecv", crypto: bool = False) -> bytes:
    """A small audio offer/answer (PCMU, PCMA, telephone-event)."""
    proto = "RTP/SAVP" if crypto else "RTP/AVP"
    lines = [
        "v=0",
        f"o={user} 1000 {1000 + (direction != 'sendrecv')} IN IP4 {ip}",
        "s=sipflow",
        f"c=IN IP4 {ip}",
        "t=0 0",
        f"m=audio {port} {proto} 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


_MIRROR = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


def _direction(body: bytes) -> str:
    for d in ("sendonly", "recvonly", "inactive"):
        if f"a={d}".encode() in body:
            return d
    return "sendrecv"


def answer_reinvite(
    ua: Dialogs, leg: Leg, req: SipRequest, src: Endpoint, t: Transport, now: int
) -> list[Action]:
    """200 to a re-INVITE with SDP mirroring the offer's direction (RFC 3264 §6.1); its
    ACK ends the 2xx retransmissions (the leg's INVITE key names the transaction)."""
    mirrored = _MIRROR.get(_direction(req.body), "sendrecv")
    user = "uas" if leg.role == "a" else "alice"
    body = sdp(user, ua._local(t).ip, 30000 if leg.role == "a" else 40000, mirrored)
    data = ua._response(req, 200, "OK", None, body, transport=t)
    key = key_of(req)
    if key is not None:
        ua._a_invites[key] = leg
        leg.invite_key = key
    return [ua._answer(req, data, 200, src, t, now)]


def _sipfrag_status(req: SipRequest) -> int | None:
    """The status code of a NOTIFY's message/sipfrag body (RFC 3515 §2.4.5), or None."""
    parts = req.body.split(b" ", 2)
    if req.method != "NOTIFY" or len(parts) < 2 or parts[0] != b"SIP/2.0":
        return None
    return int(parts[1]) if parts[1].isdigit() else None


def _config(listen: Listen, name: str, seed: int | None) -> Config:
    cfg = parse_config(
        {
            "b2bua": {"name": name, "seed": seed},
            "listen": [
                {
                    "transport": listen.transport.value.lower(),
                    "host": listen.host,
                    "port": listen.port,
                }
            ],
        }
    )
    return Config(listen=(listen,), routes=(), name=name, seed=cfg.seed)


PTIME_MS = 20
SAMPLES = 8000 * PTIME_MS // 1000  # G.711 at 8 kHz: 160 samples (bytes) per packet


def ulaw(sample: int) -> int:
    """One 16-bit linear sample as G.711 mu-law (ITU-T G.711, the usual bias-and-segment
    encoder)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent, mask = 7, 0x4000
    while exponent and not magnitude & mask:
        exponent, mask = exponent - 1, mask >> 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | exponent << 4 | mantissa) & 0xFF


def tone_frame(hz: float, index: int) -> bytes:
    """Packet ``index`` of a continuous tone in PCMU (its phase runs on, so each packet's
    payload differs)."""
    start = index * SAMPLES
    return bytes(
        ulaw(int(8000 * math.sin(2 * math.pi * hz * (start + i) / 8000))) for i in range(SAMPLES)
    )


def rtp_packet(
    seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 0, mark: bool = False
) -> bytes:
    """An RTP packet: version 2, no padding, extension or CSRC (RFC 3550 §5.1)."""
    return struct.pack("!BBHII", 0x80, (0x80 if mark else 0) | pt, seq, ts, ssrc) + payload


@dataclass(eq=False, slots=True)
class _Talk:
    """One RTP stream a UA sends."""

    local: Endpoint
    remote: Endpoint
    ssrc: int
    hz: float
    start: int
    """When packet 0 is due (ns); packet n is due ``n`` ptimes later (no drift)."""
    protect: Any = None
    """pylibsrtp session (our a=crypto key) when the leg is SRTP."""
    sent: int = 0


class Talker(B2BUA):
    """What both built-in UAs do with media: send :attr:`rtp_packets` RTP packets per
    answered call, count what comes in."""

    rtp_packets = 0
    """Packets each side sends per answered call (0: no media, the default)."""
    rtp_base = 40000
    """The first RTP port of this UA's SDP (a pair per call)."""
    tone_hz = 660.0

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.media_in = 0
        """RTP/RTCP datagrams received."""
        self.media_out = 0
        self._talking: dict[str, Endpoint] = {}  # call uuid -> our bound RTP endpoint

    def media_received(self, data: bytes, local: Endpoint, src: Endpoint, now: int) -> list[Action]:
        self.media_in += 1
        return []

    def _media_port(self, call: Call, local_ip: str, n: int) -> Endpoint:
        ep = Endpoint(local_ip, self.rtp_base + 2 * n)
        if self.rtp_packets:
            self._talking[call.uuid] = ep
        return ep

    def _open(self, call: Call) -> list[Action]:
        ep = self._talking.get(call.uuid)
        return [media.MediaOpen(ep)] if ep is not None else []

    def _talk(self, call: Call, remote: Endpoint | None, protect: Any, now: int) -> list[Action]:
        """Start sending (first packet one ptime from now)."""
        local = self._talking.get(call.uuid)
        if local is None or remote is None:
            return []
        ssrc = int.from_bytes(self.ids.bytes(4), "big")
        talk = _Talk(local, remote, ssrc, self.tone_hz, now + PTIME_MS * MS, protect)
        self.schedule(talk.start, functools.partial(self._next_packet, call, talk))
        return []

    def _next_packet(self, call: Call, talk: _Talk, now: int) -> list[Action]:
        if call.done or talk.sent >= self.rtp_packets:
            return []
        n = talk.sent
        data = rtp_packet(n + 1, n * SAMPLES, talk.ssrc, tone_frame(talk.hz, n), mark=n == 0)
        if talk.protect is not None:
            data = bytes(talk.protect.protect(data))
        talk.sent += 1
        self.media_out += 1
        if talk.sent < self.rtp_packets:
            due = talk.start + talk.sent * PTIME_MS * MS
            self.schedule(due, functools.partial(self._next_packet, call, talk))
        return [media.MediaSend(data, talk.local, talk.remote)]

    def _end_call(self, call: Call, now: int) -> list[Action]:
        out = super()._end_call(call, now)
        ep = self._talking.pop(call.uuid, None)
        return out + ([media.MediaClose(ep)] if ep is not None else [])


class Uas(Talker):
    """Answers as the Request-URI user says: ``answer`` / ``busy`` / ``notfound`` /
    ``ring`` / ``auth407`` / ``transfer`` (a prefix of the user; e.g. ``answer-1``)."""

    def __init__(self, listen: Listen, seed: int | None = None, ring_ms: int = 200) -> None:
        super().__init__(_config(listen, "sipflow-uas", seed))
        self.rtp_base = 30000
        self.tone_hz = 440.0
        self.ring = ring_ms * MS
        self.password = "secret"
        self.realm = "sipflow.test"
        self.algorithm = auth.Algorithm.MD5
        self.transfer_to = "answer-carol"
        """The Refer-To user of ``transfer`` calls (routed by the B2BUA back to a UAS)."""
        self.transfer_after = 300 * MS
        """How long after the answer ``transfer`` calls send their REFER."""

    def _new_call(self, req: SipRequest, src: Endpoint, t: Transport, now: int) -> list[Action]:
        user = req.uri.split(":", 1)[-1].split("@", 1)[0]
        behaviour = user.split("-", 1)[0]
        out: list[Action] = [self._reply(req, 100, "Trying", src, t, now)]
        if behaviour == "auth407" and not self._authorised(req):
            nonce = self.ids.token(16)
            value = auth.challenge_value(self.realm, nonce, self.algorithm)
            extra = (("Proxy-Authenticate", value),)
            tag = self.ids.token()
            return [
                *out,
                self._reply(req, 407, "Proxy Authentication Required", src, t, now, tag, extra),
            ]
        call = Call(self.ids.uuid(), now)
        a = self._a_leg(call, req, src, t, user)
        self.calls[call.uuid] = call
        if behaviour == "notfound":
            return out + self._fail_a(call, 404, "Not Found", now)
        if behaviour == "busy":
            return out + self._fail_a(call, 486, "Busy Here", now)
        out += self._ringing(a, now)
        if behaviour in ("answer", "auth407", "hold", "transfer"):
            self.schedule(now + self.ring, functools.partial(self._answer_call, a))
        if behaviour == "transfer":
            self.schedule(now + self.ring + self.transfer_after, functools.partial(self._refer, a))
        return out

    def _authorised(self, req: SipRequest) -> bool:
        value = req.headers.get("proxy-authorization")
        if value is None:
            return False
        try:
            cred = auth.parse_credentials(value)
        except ParseError:
            return False
        return auth.verify(cred, self.password, req.method)

    def _ringing(self, a: Leg, now: int) -> list[Action]:
        assert a.invite is not None
        a.state = LegState.RINGING
        data = self._response(a.invite, 180, "Ringing", a.local_tag, transport=a.transport)
        return [self._answer(a.invite, data, 180, a.peer, a.transport, now)]

    def _answer_call(self, a: Leg, now: int) -> list[Action]:
        call = a.call
        if call.done or a.invite is None:
            return []
        chosen = media.answer_sdes(a.invite.body, self.ids.bytes)
        ip = self._local(a.transport).ip
        port = self._media_port(call, ip, len(self.calls) % 500).port
        body = sdp("uas", ip, port, crypto=chosen is not None)
        if chosen is not None:  # RFC 4568 §7.1.2: one of the offered suites, our own key
            body += media.crypto_line(chosen)
        data = self._response(a.invite, 200, "OK", a.local_tag, body, transport=a.transport)
        call.answer = now
        call.final_code, call.final_reason = 200, "OK"
        a.state = LegState.ACTIVE
        out = self._open(call)
        if out:
            offered = media.selected(a.invite.body)  # the offerer's key: what it sends
            protect = None
            if chosen is not None and offered is not None:
                protect, _ = media.srtp_pair(chosen, offered)
            out += self._talk(call, media.media_address(a.invite.body), protect, now)
        return [*out, self._answer(a.invite, data, 200, a.peer, a.transport, now)]

    def _refer(self, a: Leg, now: int) -> list[Action]:
        """Blind transfer (RFC 3515, RFC 5589 §6.1): REFER the caller to ``transfer_to``
        at the host the dialog's remote target names (the B2BUA)."""
        if a.call.done or not a.confirmed:
            return []
        host = _hostport(a.remote_target)
        if host is None:
            return []
        local = self._local(a.transport)
        extra = (
            ("Refer-To", f"<sip:{self.transfer_to}@{host}>"),
            ("Referred-By", f"<sip:bob@{local}>"),
        )
        a.cseq += 1
        data = self._request(a, "REFER", a.cseq, self.ids.branch(), extra=extra)
        return [self._client_send(a, "REFER", data, now, _Client(a, "REFER"))]

    def _local_request(
        self, leg: Leg, req: SipRequest, src: Endpoint, t: Transport, now: int
    ) -> list[Action]:
        if req.method == "INVITE":
            return answer_reinvite(self, leg, req, src, t, now)
        out: list[Action] = [self._reply(req, 200, "OK", src, t, now)]
        status = _sipfrag_status(req)
        if status is not None and 200 <= status < 300 and leg.confirmed:
            leg.call.ended_by = "callee"  # the transfer worked: the transferor hangs up
            out += self._bye(leg, now) + self._end_call(leg.call, now)
        return out


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One call the UAC places."""

    user: str
    """Request-URI user (the B2BUA routes on it; the UAS behaves by it)."""
    at_ms: int = 0
    """When to send the INVITE, after the start."""
    hangup_ms: int | None = 1000
    """BYE this long after the answer (None: never)."""
    cancel_ms: int | None = None
    """CANCEL this long after the INVITE (if not answered by then)."""
    hold: bool = False
    """re-INVITE sendonly 300 ms after the answer, sendrecv 300 ms later, then BYE."""


class Uac(Talker):
    """Places the planned calls to ``target`` (the B2BUA) over ``listen.transport``."""

    def __init__(self, listen: Listen, target: Endpoint, seed: int | None = None) -> None:
        super().__init__(_config(listen, "sipflow-uac", seed))
        self.target = target
        self.placed = 0
        self.planned = 0
        self._plans: dict[str, PlannedCall] = {}

    def start(self, plan: list[PlannedCall], now: int) -> None:
        self.planned = len(plan)
        for p in plan:
            self.schedule(now + p.at_ms * MS, functools.partial(self._place, p))

    @property
    def idle(self) -> bool:
        """Every planned call placed and finished, and no transaction left open."""
        return self.placed == self.planned and not self.calls

    def _place(self, p: PlannedCall, now: int) -> list[Action]:
        t = self.config.listen[0].transport
        host = f"{self.target.ip}:{self.target.port}"
        scheme = "sip"
        target = f"{scheme}:{p.user}@{host};transport={t.value.lower()}"
        call = Call(self.ids.uuid(), now)
        call.route = Route(pattern=re.compile(""), target=target, transport=t)
        local = self._local(t)
        b = Leg(
            uuid=self.ids.uuid(),
            call=call,
            role="b",
            channel=f"uac/{p.user}",
            transport=t,
            peer=self.target,
            call_id=self.ids.token(20) + "@" + local.ip,
            local_tag=self.ids.token(),
            local_uri=f'"Alice" <sip:alice@{local}>',
            remote_uri=f"<sip:{p.user}@{host}>",
            remote_target=target,
            route=call.route,
        )
        call.b = b
        call.b_legs.append(b)
        self._legs[(b.call_id, b.local_tag)] = b
        self.calls[call.uuid] = call
        self.placed += 1
        self._plans[call.uuid] = p
        if p.cancel_ms is not None:
            self.schedule(now + p.cancel_ms * MS, functools.partial(self._cancel, call))
        port = self._media_port(call, local.ip, self.placed % 1000).port
        return [*self._open(call), self._send_invite(b, sdp("alice", local.ip, port), now)]

    def _cancel(self, call: Call, now: int) -> list[Action]:
        if call.done or call.answer is not None:
            return []
        call.cancelled = True
        call.ended_by = "caller"
        return self._cancel_b(call, now)

    def _uac_answered(self, b: Leg, resp: SipResponse, now: int) -> list[Action]:
        call = b.call
        call.answer = now
        call.final_code, call.final_reason = resp.status, resp.reason
        b.state = LegState.ACTIVE
        talk = self._talk(call, media.media_address(resp.body), None, now)
        p = self._plans.get(call.uuid)
        if p is None:
            return talk
        if p.hold:
            self.schedule(now + 300 * MS, lambda n: self._hold(b, "sendonly", n))
            self.schedule(now + 600 * MS, lambda n: self._hold(b, "sendrecv", n))
            self.schedule(now + 900 * MS, lambda n: self._hangup(b, n))
        elif p.hangup_ms is not None:
            self.schedule(now + p.hangup_ms * MS, lambda n: self._hangup(b, n))
        return talk

    def _hold(self, b: Leg, direction: str, now: int) -> list[Action]:
        if b.call.done or not b.confirmed:
            return []
        body = sdp("alice", self._local(b.transport).ip, 40000, direction)
        return [self._reinvite(b, body, now)]

    def _hangup(self, b: Leg, now: int) -> list[Action]:
        call = b.call
        if call.done or not b.confirmed:
            return []
        call.ended_by = "caller"
        out = self._bye(b, now)
        return out + self._end_call(call, now)

    def _local_request(
        self, leg: Leg, req: SipRequest, src: Endpoint, t: Transport, now: int
    ) -> list[Action]:
        """The B2BUA's re-INVITE (after a transfer: the target's SDP) or other request."""
        if req.method == "INVITE":
            return answer_reinvite(self, leg, req, src, t, now)
        return [self._reply(req, 200, "OK", src, t, now)]
