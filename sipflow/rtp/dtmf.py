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

from collections.abc import Iterable
from dataclasses import dataclass

from sipflow.sip.message import SipMessage, SipRequest

__all__ = ["Digit", "call_digits", "rfc4733_digits", "sip_info_digits"]

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


def call_digits(rtp: Iterable[Digit], info: Iterable[Digit]) -> str:
    """One digit sequence per call from both sources, in time order."""
    return "".join(d.digit for d in sorted([*rtp, *info], key=lambda d: d.ts))
