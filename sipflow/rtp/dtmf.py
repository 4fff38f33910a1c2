"""DTMF: RFC 4733 telephone-events in RTP, and SIP INFO (application/dtmf-relay, dtmf).

How this works: the RTP stage keeps, per stream, the few packets shaped like events
(dynamic payload type, 4-byte payload). :func:`rfc4733_digits` decodes them (RFC 4733
§2.3: event, E bit, volume, duration) and folds the packets of one event - same RTP
timestamp (§2.5.1.1: an event's packets share the timestamp of its start), the updates
and the three retransmitted end packets (§2.5.1.4) - into one :class:`Digit`; a repeated
end packet is counted once. :func:`sip_info_digits` reads INFO bodies: ``Signal=`` /
``Duration=`` lines (application/dtmf-relay, a de facto format) and the single-character
body of application/dtmf (RFC 2976 usage). :func:`call_digits` merges both, in time order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipflow.findings import Finding, Ref, Severity
from sipflow.sip.message import SipMessage, SipRequest

if TYPE_CHECKING:
    from sipflow.rtp.streams import RtpStream
    from sipflow.sdp.media import CallMedia

__all__ = [
    "Digit",
    "call_digits",
    "calls_rtp_digits",
    "dtmf_to_dict",
    "rfc4733_digits",
    "sip_info_digits",
    "telephone_events",
]


# RFC 4733 §3.2 Table 3: DTMF events 0-15.
EVENT_NAMES = "0123456789*#ABCD"
FLASH = 16


@dataclass(frozen=True, slots=True)
class Digit:
    """One DTMF digit, from RTP (RFC 4733) or SIP INFO."""

    digit: str
    ts: int
    """Capture time (ns) of the first packet/message."""
    duration_ms: float | None
    volume_dbm0: int | None
    """RFC 4733 §2.3.4: power level as -dBm0 (0..63), RTP only."""
    end_seen: bool
    packets: int
    end_packets: int
    via: str
    """``rfc4733`` or ``sip-info``."""
    frame: int

    def to_dict(self) -> dict[str, object]:
        return {
            "digit": self.digit,
            "ts": round(self.ts / 1e9, 6),
            "duration_ms": self.duration_ms,
            "volume": self.volume_dbm0,
            "end": self.end_seen,
            "packets": self.packets,
            "end_packets": self.end_packets,
            "via": self.via,
            "frame": self.frame,
        }


def _name(event: int) -> str:
    if event < len(EVENT_NAMES):
        return EVENT_NAMES[event]
    return "flash" if event == FLASH else f"event-{event}"


def rfc4733_digits(
    rows: Iterable[tuple[int, int, int, int, int, int, bytes]], pt: int | None, clock: int = 8000
) -> list[Digit]:
    """Digits from kept packets ``(frame, ts_ns, seq_ext, rtp_ts, pt, marker, payload)``
    of one stream; only payload type ``pt`` (the negotiated telephone-event), or when
    ``pt`` is None every packet whose payload decodes as a DTMF event (0-16)."""
    events: dict[int, list[tuple[int, int, int, int, bytes]]] = {}
    for frame, ts, seq, rts, p, _m, payload in rows:
        if (pt is not None and p != pt) or (pt is None and payload[0] > FLASH):
            continue
        events.setdefault(rts, []).append((seq, frame, ts, rts, payload))
    out = []
    for packets in events.values():
        out.append(_event_digit(packets, clock))
    out.sort(key=lambda d: d.ts)
    return out


def _event_digit(packets: list[tuple[int, int, int, int, bytes]], clock: int) -> Digit:
    packets.sort(key=lambda p: p[2])
    first = packets[0]
    ends = [p for p in packets if p[4][1] & 0x80]  # E bit (RFC 4733 §2.3.2)
    last = ends[0] if ends else packets[-1]
    duration = int.from_bytes(last[4][2:4], "big")
    return Digit(
        digit=_name(first[4][0]),
        ts=first[2],
        duration_ms=round(duration * 1000.0 / clock, 3),
        volume_dbm0=first[4][1] & 0x3F,
        end_seen=bool(ends),
        packets=len({p[0] for p in packets}),
        end_packets=len(ends),
        via="rfc4733",
        frame=first[1],
    )


def sip_info_digits(messages: Iterable[SipMessage]) -> list[Digit]:
    """Digits carried in INFO requests (retransmissions, same CSeq, counted once)."""
    out: list[Digit] = []
    seen: set[tuple[str | None, int | None]] = set()
    for msg in messages:
        if not isinstance(msg, SipRequest) or msg.method != "INFO":
            continue
        cseq = msg.cseq
        key = (msg.call_id, cseq.seq if cseq else None)
        if key in seen:
            continue
        digit = _info_digit(msg)
        if digit is not None:
            seen.add(key)
            out.append(digit)
    return out


def _info_digit(msg: SipRequest) -> Digit | None:
    ctype = (msg.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    body = msg.body.decode("utf-8", "replace")
    frame = msg.origin.frames[0] if msg.origin and msg.origin.frames else 0
    if ctype == "application/dtmf-relay":
        fields = {}
        for line in body.splitlines():
            name, _, value = line.partition("=")
            fields[name.strip().lower()] = value.strip()
        signal = fields.get("signal")
        if not signal:
            return None
        dur = fields.get("duration")
        duration = float(dur) if dur and dur.isdigit() else None
        return Digit(signal, msg.ts, duration, None, True, 1, 0, "sip-info", frame)
    if ctype == "application/dtmf" and body.strip():
        text = body.strip()
        digit = _name(int(text)) if text.isdigit() and int(text) > 9 else text
        return Digit(digit, msg.ts, None, None, True, 1, 0, "sip-info", frame)
    return None


def telephone_events(media: CallMedia) -> dict[int, int]:
    """The telephone-event payload types a call's SDP negotiated, with their clock
    (RFC 4733 §7.1.1: ``a=rtpmap:101 telephone-event/8000``; 8000 when not given)."""
    out: dict[int, int] = {}
    for x in media.exchanges:
        for ln in x.lines:
            if ln.dtmf_pt is None or ln.dtmf_pt in out:
                continue
            rates = [f.clock for f in (*ln.codecs, *ln.offered) if f.pt == ln.dtmf_pt and f.clock]
            out[ln.dtmf_pt] = rates[0] if rates else 8000
    return out


def calls_rtp_digits(
    streams: Iterable[RtpStream], media: list[CallMedia]
) -> tuple[list[list[Digit]], list[Finding]]:
    """RFC 4733 digits of the streams mapped to each call (aligned with ``media``, as a
    stream's ``call`` is), decoded with the payload type the call's SDP negotiated for
    telephone-event. Events on a dynamic type the SDP did not map at all are decoded too
    (tshark does so for 101) and reported (``rtp.dtmf_not_negotiated``: the receiver may
    drop them); a type the SDP gave a codec never is. The same stream seen at several
    capture points (one SSRC) is read once."""
    out: list[list[Digit]] = [[] for _ in media]
    findings: list[Finding] = []
    seen: set[tuple[int, int]] = set()
    for st in sorted(streams, key=lambda s: -s.packets):
        if st.call is None or not st.events or (st.call, st.ssrc) in seen:
            continue
        pts = telephone_events(media[st.call])
        pt = next((p for p in st.payload_types if p in pts), None)
        if pt is None:
            pt = _unmapped_event_type(st, media[st.call])
            if pt is None:
                continue
            findings.append(_not_negotiated(st, pt))
        seen.add((st.call, st.ssrc))
        out[st.call].extend(rfc4733_digits(st.events, pt, pts.get(pt, 8000)))
    for digits in out:
        digits.sort(key=lambda d: d.ts)
    return out, findings


def _unmapped_event_type(st: RtpStream, media: CallMedia) -> int | None:
    """The payload type most of the stream's event-shaped packets use, when the call's SDP
    maps no format to it (else those packets are that codec's, not events)."""
    mapped = {f.pt for x in media.exchanges for ln in x.lines for f in (*ln.offered, *ln.codecs)}
    counts = Counter(row[4] for row in st.events if row[4] not in mapped)
    return counts.most_common(1)[0][0] if counts else None


def _not_negotiated(st: RtpStream, pt: int) -> Finding:
    text = (
        f"RFC 4733 DTMF events on payload type {pt} in RTP {st.src} -> {st.dst} (SSRC "
        f"0x{st.ssrc:08X}), which the call's SDP did not negotiate as telephone-event: "
        "the receiver may ignore them"
    )
    refs = (Ref(st.source, st.events[0][0]),)
    return Finding("rtp.dtmf_not_negotiated", Severity.WARNING, text, "RFC 4733 §7.1.1", refs)


def dtmf_to_dict(rtp: Iterable[Digit], info: Iterable[Digit]) -> dict[str, object]:
    """A call's ``dtmf`` (docs/json.md): the digit sequence, then every digit."""
    digits = sorted([*rtp, *info], key=lambda d: d.ts)
    return {"digits": "".join(d.digit for d in digits), "events": [d.to_dict() for d in digits]}


def call_digits(rtp: Iterable[Digit], info: Iterable[Digit]) -> str:
    """One digit sequence per call from both sources, in time order."""
    return "".join(d.digit for d in sorted([*rtp, *info], key=lambda d: d.ts))
