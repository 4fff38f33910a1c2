"""FreeSWITCH-style debug log and pcap records of a B2BUA run (formatting only, no I/O).

How this works: :func:`trace_block` renders one message as a sofia siptrace block
(``recv N bytes from udp/[ip]:port at HH:MM:SS.ffffff:``, dashed line, the message with
each line indented, dashed line), the way ``sofia global siptrace on`` writes it;
:func:`event_line` renders a :class:`~sipflow.b2bua.core.CallEvent` as the matching
FreeSWITCH line (``New Channel``, ``State Change``, ``Callstate Change``, ``Originate
Resulted in``, ``Hangup``). Each line carries the FreeSWITCH prefix
``uuid YYYY-MM-DD HH:MM:SS.ffffff [LEVEL] file.c:line`` so sipflow's own log reader (and
a person) can tie lines to channels. :class:`PcapRecords` turns what was sent and
received into pcap records (Ethernet, IPv4/IPv6, UDP, or TCP with per-direction
sequence numbers); TLS legs are recorded as the cleartext SIP they carried, as TCP on
the same ports (the truth file names those ports).
"""

from __future__ import annotations

import ipaddress
import struct
from datetime import UTC, datetime

from sipflow.b2bua.core import CallEvent, EventKind
from sipflow.ingest.types import Endpoint, Transport

DASHES = "   " + "-" * 72
_PCAP_NS_MAGIC = 0xA1B23C4D
_ETH_V4 = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
_ETH_V6 = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x86\xdd"


def _clock(ts: int) -> datetime:
    return datetime.fromtimestamp(ts / 1e9, UTC)


def stamp(ts: int) -> str:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC) of a ns time."""
    return _clock(ts).strftime("%Y-%m-%d %H:%M:%S.%f")


def trace_block(direction: str, data: bytes, transport: Transport, peer: Endpoint, ts: int) -> str:
    """A sofia siptrace block; ``direction`` is ``recv`` or ``send``."""
    prep = "from" if direction == "recv" else "to"
    tod = _clock(ts).strftime("%H:%M:%S.%f")
    proto = transport.value.lower()
    head = f"{direction} {len(data)} bytes {prep} {proto}/[{peer.ip}]:{peer.port} at {tod}:"
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
    body = "\n".join("   " + line for line in text.split("\n"))
    return f"{head}\n{DASHES}\n{body}\n{DASHES}\n"


_EVENT_SOURCE = {
    EventKind.NEW_CHANNEL: "switch_channel.c:1104",
    EventKind.STATE: "switch_core_state_machine.c:473",
    EventKind.CALLSTATE: "switch_channel.c:2216",
    EventKind.ORIGINATE: "switch_ivr_originate.c:3941",
    EventKind.ANSWER: "switch_channel.c:3684",
    EventKind.HANGUP: "switch_channel.c:3352",
    EventKind.CALL_END: "switch_core_session.c:1744",
}


def event_line(ev: CallEvent) -> str:
    """The FreeSWITCH log line(s) of one event."""
    pre = f"{ev.leg} {stamp(ev.ts)} [DEBUG] {_EVENT_SOURCE[ev.kind]}"
    ch = ev.channel
    if ev.kind is EventKind.NEW_CHANNEL:
        return f"{pre} New Channel {ch} [{ev.leg}]\n{pre} sending invite call-id: {ev.detail}\n"
    if ev.kind is EventKind.STATE:
        return f"{pre} ({ch}) State Change {ev.old} -> {ev.new}\n"
    if ev.kind is EventKind.CALLSTATE:
        return f"{pre} ({ch}) Callstate Change {ev.old} -> {ev.new}\n"
    if ev.kind is EventKind.ORIGINATE:
        return f"{pre} ({ch}) Originate Resulted in {ev.new}: [{ev.detail}]\n"
    if ev.kind is EventKind.ANSWER:
        return f"{pre} Channel [{ch}] has been answered\n"
    if ev.kind is EventKind.HANGUP:
        return f"{pre} Hangup {ch} [{ev.old}] [{ev.new}]\n"
    return f"{pre} Close Channel {ch} [CS_DESTROY]\n"


# -- pcap ----------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def _ip(src: str, dst: str, proto: int, length: int) -> tuple[bytes, bytes]:
    """(IP header, pseudo-header for the transport checksum), RFC 791 / RFC 8200."""
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 6:
        head = struct.pack("!IHBB", 6 << 28, length, proto, 64) + a.packed + b.packed
        return head, a.packed + b.packed + struct.pack("!IxxxB", length, proto)
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0x4000, 64, proto, 0, a.packed, b.packed
    )
    head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
    return head, a.packed + b.packed + struct.pack("!xBH", proto, length)


class PcapRecords:
    """Pcap file header and records (ns resolution, Ethernet) of SIP messages."""

    def __init__(self) -> None:
        self._seq: dict[tuple[Endpoint, Endpoint], int] = {}

    @staticmethod
    def header() -> bytes:
        return struct.pack("<IHHiIII", _PCAP_NS_MAGIC, 2, 4, 0, 0, 262144, 1)

    def record(
        self, ts: int, src: Endpoint, dst: Endpoint, transport: Transport, data: bytes
    ) -> bytes:
        eth = _ETH_V6 if ":" in src.ip else _ETH_V4
        if transport is Transport.UDP:
            packets = [self._udp(src, dst, data)]
        else:
            packets = [self._tcp(src, dst, data[i : i + 60000]) for i in range(0, len(data), 60000)]
        secs, ns = divmod(ts, 1_000_000_000)
        out = b""
        for p in packets:
            frame = eth + p
            out += struct.pack("<IIII", secs, ns, len(frame), len(frame)) + frame
        return out

    @staticmethod
    def _udp(src: Endpoint, dst: Endpoint, data: bytes) -> bytes:
        length = 8 + len(data)
        ip, pseudo = _ip(src.ip, dst.ip, 17, length)
        head = struct.pack("!HHHH", src.port, dst.port, length, 0)
        csum = _checksum(pseudo + head + data) or 0xFFFF  # RFC 768
        return ip + head[:6] + struct.pack("!H", csum) + data

    def _tcp(self, src: Endpoint, dst: Endpoint, data: bytes) -> bytes:
        seq = self._seq.get((src, dst), 1)
        ack = self._seq.get((dst, src), 1)
        self._seq[(src, dst)] = (seq + len(data)) & 0xFFFFFFFF
        length = 20 + len(data)
        ip, pseudo = _ip(src.ip, dst.ip, 6, length)
        head = struct.pack("!HHIIBBHHH", src.port, dst.port, seq, ack, 5 << 4, 0x18, 65535, 0, 0)
        csum = _checksum(pseudo + head + data)
        return ip + head[:16] + struct.pack("!H", csum) + head[18:] + data
