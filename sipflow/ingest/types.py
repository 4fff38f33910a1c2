"""Values that leave ingest: endpoints, transports, datagrams and per-source stats.

How this works: ingest turns capture records into :class:`Datagram` values, one per
UDP payload / reassembled IP datagram / WebSocket message / SCTP DATA chunk, and, for
TCP, one per run of new in-order stream bytes (SIP framing over streams is done by
:mod:`sipflow.sip.framing`, which needs the stream, not the segments). Timestamps are
integer nanoseconds since the Unix epoch everywhere in sipflow.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field


class Transport(enum.Enum):
    """The transport a SIP message travelled on (RFC 3261 §18, RFC 7118, RFC 4168)."""

    UDP = "UDP"
    TCP = "TCP"
    TLS = "TLS"
    WS = "WS"
    WSS = "WSS"
    SCTP = "SCTP"


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """An IP address (text form, as ``ipaddress`` prints it) and a port."""

    ip: str
    port: int

    def __str__(self) -> str:
        if ":" in self.ip:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class Datagram:
    """Payload bytes between two endpoints, after IP and transport reassembly.

    ``frames`` are the 1-based frame numbers (in source ``source``) that carried the
    bytes; ``ts`` is the time (ns) of the last of them. For ``Transport.TCP`` the payload
    is the next in-order bytes of one direction of a stream (``stream`` identifies the
    connection direction; ``gap`` is True when bytes before this payload were never
    captured, so a framer must resynchronise).
    """

    src: Endpoint
    dst: Endpoint
    transport: Transport
    payload: bytes
    frames: tuple[int, ...]
    ts: int
    source: int = 0
    stream: int = -1
    gap: bool = False


@dataclass(slots=True)
class SourceStats:
    """What ingest read from one source and what it skipped, and why."""

    path: str
    format: str = "unknown"
    link_types: set[str] = field(default_factory=set)
    frames: int = 0
    bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    first_ts: int | None = None
    last_ts: int | None = None
    duplicates: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "format": self.format,
            "link_types": sorted(self.link_types),
            "frames": self.frames,
            "bytes": self.bytes,
            "skipped": dict(sorted(self.skipped.items())),
            "duplicates": self.duplicates,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


@dataclass(frozen=True, slots=True)
class IpFragment:
    """One fragment of an IPv4 or IPv6 datagram that needs reassembly (RFC 791, RFC 8200 §4.5).

    ``ident`` is the IPv4 Identification or IPv6 Fragment header Identification;
    ``protocol`` the upper-layer protocol number; ``offset`` in bytes; ``more`` the MF bit;
    ``payload`` the fragment's data (after all IP headers).
    """

    source: int
    frame: int
    ts: int
    version: int
    src_ip: str
    dst_ip: str
    ident: int
    protocol: int
    offset: int
    more: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class ReassembledIp:
    """A whole IP payload rebuilt from fragments: upper-layer protocol and its bytes."""

    source: int
    frames: tuple[int, ...]
    ts: int
    version: int
    src_ip: str
    dst_ip: str
    protocol: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class TcpSegment:
    """One TCP segment as captured (RFC 9293): sequence numbers, flags and payload."""

    source: int
    frame: int
    ts: int
    src: Endpoint
    dst: Endpoint
    seq: int
    ack: int
    flags: int
    payload: bytes


# TCP flag bits (RFC 9293 §3.1)
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
