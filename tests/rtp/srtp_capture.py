"""Captures with real SRTP made here: an INVITE/200 whose SDP carries SDES crypto lines,
G.711 RTP and RTCP sender reports protected by libsrtp (pylibsrtp) with those keys (for the
AES-192/256-CM suites libsrtp's binding lacks: by :class:`sipflow.rtp.srtp_cm.CmSession`,
whose protect path is checked against pylibsrtp in test_srtp_cm.py), and the BYE; written
as a pcap by :func:`sipflow.ingest.pcapwrite.write_pcap` (which writes each item's ``raw``
bytes as a UDP datagram between its ``origin`` endpoints at ``origin.ts``).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sipflow.ingest.pcapwrite import write_pcap
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.message import Origin

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000
A_IP, B_IP = "10.0.0.1", "10.0.0.2"
A_RTP, B_RTP = 40000, 50000
SSRC_A, SSRC_B = 0x1111AAAA, 0x2222BBBB
S80, S32 = "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"
PROFILE = {S80: "SRTP_PROFILE_AES128_CM_SHA1_80", S32: "SRTP_PROFILE_AES128_CM_SHA1_32"}


def key(n: int, size: int = 30) -> bytes:
    """A master key || salt: 30 octets by default (RFC 4568 §6.2: 128-bit key, 112-bit
    salt), 38 or 46 for AES-192/256 (RFC 6188 §3)."""
    return bytes((n * 7 + i) & 0xFF for i in range(size))


@dataclass(frozen=True)
class Wire:
    """One datagram for write_pcap: what it reads of a SipMessage."""

    raw: bytes
    origin: Origin

    @property
    def ts(self) -> int:
        return self.origin.ts


def wire(raw: bytes, src: tuple[str, int], dst: tuple[str, int], ts: int) -> Wire:
    origin = Origin(0, (), ts, Endpoint(*src), Endpoint(*dst), Transport.UDP)
    return Wire(raw, origin)


def sdp(ip: str, port: int, cryptos: list[tuple[int, str, bytes]], pts: str = "0",
        proto: str = "RTP/SAVP", extra: tuple[str, ...] = ()) -> str:  # fmt: skip
    lines = ["v=0", f"o=- 1 1 IN IP4 {ip}", "s=-", f"c=IN IP4 {ip}", "t=0 0",
             f"m=audio {port} {proto} {pts}", *extra]  # fmt: skip
    lines += [f"a=crypto:{t} {s} inline:{base64.b64encode(k).decode()}" for t, s, k in cryptos]
    return "\r\n".join(lines) + "\r\n"


def sip(start: str, cseq: str, body: str = "", to_tag: str = "") -> bytes:
    head = [
        start,
        f"Via: SIP/2.0/UDP {A_IP}:5060;branch=z9hG4bK-{cseq.replace(' ', '-')}",
        "Max-Forwards: 70",
        f"From: <sip:alice@{A_IP}>;tag=a1",
        f"To: <sip:bob@{B_IP}>" + (f";tag={to_tag}" if to_tag else ""),
        "Call-ID: srtp-test-1",
        f"CSeq: {cseq}",
        f"Contact: <sip:alice@{A_IP}:5060>",
    ]
    if body:
        head.append("Content-Type: application/sdp")
    head.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


def call(offer: str, answer: str, end: int) -> list[Wire]:
    """INVITE (offer) / 200 (answer) / ACK before T0, BYE / 200 at ``end``."""
    a, b = (A_IP, 5060), (B_IP, 5060)
    inv = "INVITE sip:bob@10.0.0.2 SIP/2.0"
    ok = "SIP/2.0 200 OK"
    return [
        wire(sip(inv, "1 INVITE", offer), a, b, T0 - 900 * MS),
        wire(sip(ok, "1 INVITE", answer, "b1"), b, a, T0 - 500 * MS),
        wire(sip("ACK sip:bob@10.0.0.2 SIP/2.0", "1 ACK", to_tag="b1"), a, b, T0 - 400 * MS),
        wire(sip("BYE sip:bob@10.0.0.2 SIP/2.0", "2 BYE", to_tag="b1"), a, b, end),
        wire(sip(ok, "2 BYE", to_tag="b1"), b, a, end + 20 * MS),
    ]  # fmt: skip


def rtp(ssrc: int, seq: int, ts: int, payload: bytes, pt: int = 0, marker: bool = False) -> bytes:
    head = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, ssrc)
    return head + payload


def sender_report(ssrc: int, ntp: int, rtp_ts: int, packets: int, octets: int,
                  about: tuple[int, int, int, int] | None = None) -> bytes:  # fmt: skip
    """RFC 3550 §6.4.1 SR, with one report block (ssrc, highest seq, lsr, dlsr) if given."""
    blocks = b""
    if about is not None:
        who, highest, lsr, dlsr = about
        blocks = struct.pack("!IIIIII", who, 0, highest, 0, lsr, dlsr)
    body = struct.pack("!IQIII", ssrc, ntp, rtp_ts, packets, octets) + blocks
    head = struct.pack("!BBH", 0x80 | (1 if about else 0), 200, (4 + len(body)) // 4 - 1)
    return head + body


def session(material: bytes, suite: str) -> object:
    if suite not in PROFILE:
        from sipflow.rtp.srtp_cm import CmSession

        return CmSession(material, suite)
    import pylibsrtp

    profile = getattr(pylibsrtp.Policy, PROFILE[suite])
    policy = pylibsrtp.Policy(material, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, 0, profile)
    return pylibsrtp.Session(policy)


@dataclass
class Side:
    """One party's media: its payloads (kept to check decryption) and the packets."""

    ssrc: int
    src: tuple[str, int]
    dst: tuple[str, int]
    payloads: list[bytes] = field(default_factory=list)


def ntp(i: int) -> int:
    """NTP time (RFC 5905 64-bit) a sender puts in its SR after packet ``i``."""
    return ((3_900_000_000 + i) << 32) | 0x80000000


def media(side: Side, material: bytes, suite: str, n: int, offset_ms: int, seed: int,
          peer: Side | None = None) -> list[Wire]:  # fmt: skip
    """``n`` PCMU packets of 20 ms from ``side`` protected with ``material``, and an SRTCP
    SR after every 50 (with a report block about ``peer``: an RTT of the offset between the
    two sides' SRs, DLSR 0)."""
    rng = np.random.default_rng(seed)
    s = session(material, suite)
    out: list[Wire] = []
    rtcp_src, rtcp_dst = (side.src[0], side.src[1] + 1), (side.dst[0], side.dst[1] + 1)
    for i in range(n):
        t = T0 + (20 * i + offset_ms) * MS
        payload = rng.integers(0, 256, 160, dtype=np.uint8).tobytes()
        side.payloads.append(payload)
        clear = rtp(side.ssrc, 1000 + i, 160 * i, payload, marker=i == 0)
        out.append(wire(s.protect(clear), side.src, side.dst, t))  # type: ignore[attr-defined]
        if (i + 1) % 50 == 0:
            about = None
            if peer is not None:  # LSR: the peer's SR of the same packet count, sent earlier
                about = (peer.ssrc, 1000 + i, (ntp(i) >> 16) & 0xFFFFFFFF, 0)
            sr = sender_report(side.ssrc, ntp(i), 160 * i, i + 1, 160 * (i + 1), about)
            out.append(wire(s.protect_rtcp(sr), rtcp_src, rtcp_dst, t + MS))  # type: ignore[attr-defined]
    return out


def write(path: Path, items: list[Wire]) -> Path:
    write_pcap(str(path), sorted(items, key=lambda w: w.ts), {})  # type: ignore[arg-type]
    return path


def srtp_call(path: Path, n: int = 100, b_sends_with: bytes | None = None,
              a_sends_tag: int = 2) -> tuple[Path, Side, Side]:  # fmt: skip
    """A call whose offer lists tags 1 (_80) and 2 (_32), the answer accepts tag 2; A sends
    with its tag ``a_sends_tag`` key, B with the answer's key (or ``b_sends_with``)."""
    a_keys = {1: (S80, key(1)), 2: (S32, key(2))}
    offer = sdp(A_IP, A_RTP, [(t, s, k) for t, (s, k) in a_keys.items()])
    answer = sdp(B_IP, B_RTP, [(2, S32, key(3))])
    a = Side(SSRC_A, (A_IP, A_RTP), (B_IP, B_RTP))
    b = Side(SSRC_B, (B_IP, B_RTP), (A_IP, A_RTP))
    suite_a, key_a = a_keys[a_sends_tag]
    items = call(offer, answer, T0 + (20 * n + 100) * MS)
    items += media(a, key_a, suite_a, n, 0, seed=1)
    items += media(b, b_sends_with or key(3), S32, n, 5, seed=2, peer=a)
    return write(path, items), a, b


def cm_call(path: Path, suite: str, n: int = 100, b_sends_with: bytes | None = None,
            size: int = 46) -> tuple[Path, Side, Side]:  # fmt: skip
    """A call whose offer and answer carry one ``suite`` line each (tag 1, keys of ``size``
    octets); A and B send with their own keys (B with ``b_sends_with`` if given)."""
    offer = sdp(A_IP, A_RTP, [(1, suite, key(4, size))])
    answer = sdp(B_IP, B_RTP, [(1, suite, key(5, size))])
    a = Side(SSRC_A, (A_IP, A_RTP), (B_IP, B_RTP))
    b = Side(SSRC_B, (B_IP, B_RTP), (A_IP, A_RTP))
    items = call(offer, answer, T0 + (20 * n + 100) * MS)
    items += media(a, key(4, size), suite, n, 0, seed=3)
    items += media(b, b_sends_with or key(5, size), suite, n, 5, seed=4, peer=a)
    return write(path, items), a, b
