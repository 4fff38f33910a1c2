"""RTCP compound packets: SR, RR, SDES, BYE, XR (RFC 3550 §6, RFC 3611), one at a time.

How this works: RTCP is rare (about one compound packet per stream per 5 s, RFC 3550
§6.2), so each is parsed whole, in Python. :func:`parse_compound` walks the packets of a
compound datagram by their length fields (§6.1) and returns :class:`RtcpPacket` values;
report blocks (§6.4.1) carry the peer's view of a stream: fraction lost, cumulative lost,
highest sequence number, interarrival jitter (timestamp units), LSR/DLSR for round trip
time (§6.4.1: RTT = A - LSR - DLSR, in 1/65536 s). XR VoIP Metrics blocks (RFC 3611
§4.7) give loss/discard rates, delays, R factors and MOS as the endpoint computed them.
SRTCP (RFC 3711 §3.4) looks the same up to the first packet; what follows is encrypted
and is only read once decrypted (:mod:`sipflow.rtp.decrypt`). With rtcp-mux (RFC 5761) RTCP shares
the RTP port; classification is by packet type, so nothing changes here.
:class:`RtcpFolder` folds parsed packets into one :class:`RtcpView` per stream.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from sipflow.errors import ParseError

__all__ = ["ReportBlock", "RtcpFolder", "RtcpPacket", "RtcpView", "VoipMetrics", "parse_compound"]

SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR = 200, 201, 202, 203, 204, 205, 206, 207
NAMES = {SR: "SR", RR: "RR", SDES: "SDES", BYE: "BYE", APP: "APP", RTPFB: "RTPFB",
         PSFB: "PSFB", XR: "XR"}  # fmt: skip
XR_VOIP_METRICS = 7  # RFC 3611 §4.7


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """RFC 3550 §6.4.1 report block: the sender's view of the stream ``ssrc``."""

    ssrc: int
    fraction_lost: float
    """0..1 (the 8-bit fixed-point field / 256)."""
    cumulative_lost: int
    highest_seq: int
    jitter: int
    """Interarrival jitter in timestamp units."""
    lsr: int
    dlsr: int


@dataclass(frozen=True, slots=True)
class VoipMetrics:
    """RFC 3611 §4.7 VoIP Metrics Report Block (the fields sipflow shows)."""

    ssrc: int
    loss_rate: float
    discard_rate: float
    round_trip_ms: int
    end_system_delay_ms: int
    r_factor: int | None
    mos_lq: float | None
    mos_cq: float | None


@dataclass(frozen=True, slots=True)
class RtcpPacket:
    """One packet of a compound RTCP datagram."""

    pt: int
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    ntp: int | None = None
    """SR: NTP timestamp (64-bit fixed point)."""
    rtp_ts: int | None = None
    sender_packets: int | None = None
    sender_octets: int | None = None
    voip: tuple[VoipMetrics, ...] = ()
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return NAMES.get(self.pt, str(self.pt))


_HDR = struct.Struct("!BBH")
_SR = struct.Struct("!IQIII")
_RB = struct.Struct("!IIIIII")


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """The packets of a compound RTCP datagram (RFC 3550 §6.1). Raises ParseError when
    the first packet is broken; a broken later packet ends the walk (kept: those before)."""
    out: list[RtcpPacket] = []
    off = 0
    while off + 4 <= len(data):
        b0, pt, words = _HDR.unpack_from(data, off)
        size = (words + 1) * 4
        if b0 >> 6 != 2 or off + size > len(data):
            if not out:
                raise ParseError("rtcp", "bad version or length", off)
            break
        out.append(_packet(b0 & 0x1F, pt, data[off + 4 : off + size], off))
        off += size
    if not out:
        raise ParseError("rtcp", "no packet", 0)
    return out


def _packet(count: int, pt: int, body: bytes, off: int) -> RtcpPacket:
    if len(body) < 4:
        return RtcpPacket(pt, 0)
    ssrc = int.from_bytes(body[:4], "big")
    if pt == SR:
        if len(body) < 24:
            raise ParseError("rtcp.sr", "shorter than the sender info (RFC 3550 §6.4.1)", off)
        _, ntp, rts, pkts, octets = _SR.unpack_from(body, 0)
        return RtcpPacket(pt, ssrc, _blocks(body, 24, count), ntp, rts, pkts, octets)
    if pt == RR:
        return RtcpPacket(pt, ssrc, _blocks(body, 4, count))
    if pt == XR:
        return RtcpPacket(pt, ssrc, voip=_xr_voip(body))
    return RtcpPacket(pt, ssrc)


def _blocks(body: bytes, at: int, count: int) -> tuple[ReportBlock, ...]:
    out = []
    for i in range(count):
        p = at + 24 * i
        if p + 24 > len(body):
            break
        ssrc, lost, hi, jitter, lsr, dlsr = _RB.unpack_from(body, p)
        cum = lost & 0xFFFFFF
        if cum & 0x800000:  # signed 24-bit (RFC 3550 §6.4.1)
            cum -= 1 << 24
        out.append(ReportBlock(ssrc, (lost >> 24) / 256.0, cum, hi, jitter, lsr, dlsr))
    return tuple(out)


def _xr_voip(body: bytes) -> tuple[VoipMetrics, ...]:
    """VoIP Metrics blocks among the XR report blocks (RFC 3611 §3, §4.7)."""
    out = []
    p = 4
    while p + 4 <= len(body):
        bt, _, blen = struct.unpack_from("!BBH", body, p)
        size = 4 + 4 * blen
        if bt == XR_VOIP_METRICS and blen == 8 and p + size <= len(body):
            b = body[p + 4 : p + size]
            r = b[16]
            mos_lq, mos_cq = b[18], b[19]
            out.append(
                VoipMetrics(
                    int.from_bytes(b[0:4], "big"),
                    b[4] / 256.0,
                    b[5] / 256.0,
                    int.from_bytes(b[12:14], "big"),
                    int.from_bytes(b[14:16], "big"),
                    None if r == 127 else r,  # 127: unavailable
                    None if mos_lq == 127 else mos_lq / 10.0,
                    None if mos_cq == 127 else mos_cq / 10.0,
                )
            )
        p += size
    return tuple(out)


def rtt_ms(block: ReportBlock, arrival_ntp_middle: int) -> float | None:
    """Round trip time from a report block and the arrival time of the report in the middle
    32 bits of NTP format (RFC 3550 §6.4.1); None when LSR is 0 (no SR received yet)."""
    if block.lsr == 0:
        return None
    rtt = (arrival_ntp_middle - block.lsr - block.dlsr) & 0xFFFFFFFF
    if rtt > 0x7FFFFFFF:
        return None
    return rtt * 1000.0 / 65536.0


def ntp_middle(ts_ns: int) -> int:
    """The middle 32 bits of the NTP timestamp of a Unix time in ns (RFC 5905 era 0)."""
    seconds = ts_ns // 1_000_000_000 + 2_208_988_800
    frac = ((ts_ns % 1_000_000_000) << 16) // 1_000_000_000
    return ((seconds & 0xFFFF) << 16) | frac


# -- per-stream summary ---------------------------------------------------------------------

SR_MEMORY = 1_000_000  # SR times remembered for RTT, at most


@dataclass
class RtcpView:
    """What RTCP said about one stream: the receiver's report blocks about it, and the
    sender's own SR counts. Keyed by (SSRC, sender IP, receiver IP) of the stream."""

    reports: int = 0
    fraction_lost_max: float = 0.0
    cumulative_lost: int | None = None
    jitter_max: int = 0
    """Timestamp units, as the receiver computed it (RFC 3550 §6.4.1)."""
    rtt_min_ms: float | None = None
    rtt_max_ms: float | None = None
    sr: int = 0
    sender_packets: int | None = None
    sender_octets: int | None = None
    xr: dict[str, Any] | None = None

    def add_rtt(self, rtt: float) -> None:
        self.rtt_min_ms = rtt if self.rtt_min_ms is None else min(self.rtt_min_ms, rtt)
        self.rtt_max_ms = rtt if self.rtt_max_ms is None else max(self.rtt_max_ms, rtt)

    def to_dict(self, clock: int) -> dict[str, Any]:
        lo, hi = self.rtt_min_ms, self.rtt_max_ms
        return {
            "reports": self.reports,
            "fraction_lost_max": round(self.fraction_lost_max, 4),
            "cumulative_lost": self.cumulative_lost,
            "max_jitter_ms": round(self.jitter_max * 1000.0 / clock, 3),
            "rtt_ms": {"min": round(lo, 3), "max": round(hi, 3)}
            if lo is not None and hi is not None
            else None,
            "sender_reports": self.sr,
            "sender_packets": self.sender_packets,
            "sender_octets": self.sender_octets,
            "xr_voip": self.xr,
        }


class RtcpFolder:
    """RTCP packets folded into a :class:`RtcpView` per stream, RTT from SR/RR pairs."""

    def __init__(self) -> None:
        self._views: dict[tuple[int, str, str], RtcpView] = {}
        self._sr_seen: dict[tuple[int, int], int] = {}
        """(SSRC, middle 32 bits of an SR's NTP time) -> capture time (ns) of that SR."""

    def view(self, ssrc: int, src: str, dst: str) -> RtcpView | None:
        """What RTCP said about the stream ``ssrc`` sent from ``src`` to ``dst`` (IPs)."""
        return self._views.get((ssrc, src, dst))

    def drop(self, ssrc: int, src: str, dst: str) -> None:
        """Forget the view of a stream that was released (sipflow.engine.stream)."""
        self._views.pop((ssrc, src, dst), None)

    def _at(self, ssrc: int, src: str, dst: str) -> RtcpView:
        return self._views.setdefault((ssrc, src, dst), RtcpView())

    def fold(self, packets: list[RtcpPacket], src: str, dst: str, ts: int) -> None:
        """One compound packet sent from ``src`` to ``dst`` (IPs), captured at ``ts`` (ns)."""
        for p in packets:
            self._sender(p, src, dst, ts)
            for rb in p.reports:  # about the stream rb.ssrc that flows dst -> src
                self._report(rb, self._at(rb.ssrc, dst, src), ts)
            for vm in p.voip:
                self._at(vm.ssrc, dst, src).xr = {
                    "loss_rate": vm.loss_rate,
                    "discard_rate": vm.discard_rate,
                    "round_trip_ms": vm.round_trip_ms,
                    "r_factor": vm.r_factor,
                    "mos_lq": vm.mos_lq,
                    "mos_cq": vm.mos_cq,
                }

    def _sender(self, p: RtcpPacket, src: str, dst: str, ts: int) -> None:
        if p.pt != SR or p.ntp is None:
            return
        view = self._at(p.ssrc, src, dst)
        view.sr += 1
        view.sender_packets, view.sender_octets = p.sender_packets, p.sender_octets
        if len(self._sr_seen) < SR_MEMORY:
            self._sr_seen[(p.ssrc, (p.ntp >> 16) & 0xFFFFFFFF)] = ts

    def _report(self, rb: ReportBlock, view: RtcpView, ts: int) -> None:
        view.reports += 1
        view.fraction_lost_max = max(view.fraction_lost_max, rb.fraction_lost)
        view.cumulative_lost = rb.cumulative_lost
        view.jitter_max = max(view.jitter_max, rb.jitter)
        sent = self._sr_seen.get((rb.ssrc, rb.lsr)) if rb.lsr else None
        if sent is not None:  # RFC 3550 §6.4.1 RTT, both ends timed by the capture
            rtt = (ts - sent) / 1e6 - rb.dlsr * 1000.0 / 65536.0
            if rtt >= 0:  # negative: the capture point is not beside the SR's sender
                view.add_rtt(rtt)
