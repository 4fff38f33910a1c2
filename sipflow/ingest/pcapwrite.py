"""Write SIP messages as a classic pcap, for ``sipflow convert LOG -o out.pcap``.

How this works: each message becomes one Ethernet frame carrying IPv4 or IPv6 and one UDP
datagram (RFC 768) or TCP segment (RFC 9293) with its raw bytes, at its ``origin.ts``, in
a nanosecond-resolution pcap (magic ``0xa1b23c4d``). Stream transports (TCP, TLS, WS, WSS,
SCTP) are written as plain TCP: the log shows the decrypted text, so a TLS leg becomes
readable SIP over TCP on the same ports. A stream message whose body does not have
Content-Length bytes (common in edited logs: placeholders shorten the body) cannot be cut
out of a byte stream by any reader (RFC 3261 §18.3), so it is written as a UDP datagram
instead and counted in ``counts["stream_written_as_udp"]``. Each TCP connection direction
keeps its own sequence number, advanced by the bytes sent (no handshake is written; readers accept a
stream that starts mid-way); a message longer than one segment is split. Checksums are
computed (RFC 1071 over the RFC 768/RFC 8200 §8.1 pseudo-header).

Addresses that are not IP literals (log placeholders such as ``caller_ip``, host names, a
missing side) are replaced by documentation addresses (RFC 5737: 192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24; RFC 3849: 2001:db8::/32), the same placeholder always by
the same address; the mapping used is returned for the caller to record.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections import Counter
from collections.abc import Iterator

from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.message import SipMessage

LINKTYPE_ETHERNET = 1
_PCAP_NS_MAGIC = 0xA1B23C4D
_MAX_SEGMENT = 60_000
_DOC_V4 = ("192.0.2.", "198.51.100.", "203.0.113.")
_ETH_V4 = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
_ETH_V6 = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x86\xdd"
_UNKNOWN = "unknown"
# RFC 3261 §20.14 Content-Length, compact form "l" (§7.3.3), at a line start.
_CLEN = re.compile(rb"\r?\n(?i:content-length|l)[ \t]*:[ \t]*([0-9]+)")


def _framable(raw: bytes) -> bool:
    """Whether a stream reader can cut this message out: an empty line ends the header
    block and exactly Content-Length bytes follow (RFC 3261 §18.3)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return False
    m = _CLEN.search(raw, 0, end + 2)
    return m is not None and int(m[1]) == len(raw) - end - 4


def _checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _doc_addresses(v6: bool) -> Iterator[str]:
    if v6:
        for n in range(1, 65536):
            yield f"2001:db8::{n:x}"
        return
    for prefix in _DOC_V4:
        for n in range(1, 255):
            yield prefix + str(n)


class _Mapper:
    """Placeholder -> documentation address, stable, never colliding with real ones."""

    def __init__(self, mapping: dict[str, str], used: set[str]) -> None:
        self.mapping = dict(mapping)
        taken = used | set(self.mapping.values())
        self.pool = (a for a in _doc_addresses(False) if a not in taken)

    def ip(self, text: str) -> str:
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            pass
        if text not in self.mapping:
            self.mapping[text] = next(self.pool)
        return self.mapping[text]


def _ip_header(src: str, dst: str, proto: int, payload_len: int) -> tuple[bytes, bytes]:
    """(IP header, pseudo-header for the transport checksum)."""
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 6 or b.version == 6:
        a6 = a if a.version == 6 else ipaddress.IPv6Address(f"::ffff:{a}")
        b6 = b if b.version == 6 else ipaddress.IPv6Address(f"::ffff:{b}")
        head = struct.pack("!IHBB", 6 << 28, payload_len, proto, 64) + a6.packed + b6.packed
        pseudo = a6.packed + b6.packed + struct.pack("!IxxxB", payload_len, proto)
        return head, pseudo
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 0, 0x4000, 64, proto, 0, a.packed, b.packed
    )
    head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
    pseudo = a.packed + b.packed + struct.pack("!xBH", proto, payload_len)
    return head, pseudo


def _udp(src: Endpoint, dst: Endpoint, payload: bytes) -> bytes:
    length = 8 + len(payload)
    ip, pseudo = _ip_header(src.ip, dst.ip, 17, length)
    head = struct.pack("!HHHH", src.port, dst.port, length, 0)
    csum = _checksum(pseudo + head + payload) or 0xFFFF  # RFC 768: 0 is sent as all ones
    return ip + head[:6] + struct.pack("!H", csum) + payload


def _tcp(src: Endpoint, dst: Endpoint, seq: int, ack: int, payload: bytes) -> bytes:
    length = 20 + len(payload)
    ip, pseudo = _ip_header(src.ip, dst.ip, 6, length)
    head = struct.pack("!HHIIBBHHH", src.port, dst.port, seq, ack, 5 << 4, 0x18, 65535, 0, 0)
    csum = _checksum(pseudo + head + payload)
    return ip + head[:16] + struct.pack("!H", csum) + head[18:] + payload


def _record(ts: int, frame: bytes) -> bytes:
    ts = max(ts, 0)
    secs, ns = divmod(ts, 1_000_000_000)
    return struct.pack("<IIII", secs & 0xFFFFFFFF, ns, len(frame), len(frame)) + frame


def _endpoints(msg: SipMessage, mapper: _Mapper) -> tuple[Endpoint, Endpoint]:
    o = msg.origin
    src = o.src if o and o.src else Endpoint(_UNKNOWN + "_src", 5060)
    dst = o.dst if o and o.dst else Endpoint(_UNKNOWN + "_dst", 5060)
    return Endpoint(mapper.ip(src.ip), src.port), Endpoint(mapper.ip(dst.ip), dst.port)


def write_pcap(
    path: str,
    messages: list[SipMessage],
    mapping: dict[str, str],
    counts: Counter[str] | None = None,
) -> dict[str, str]:
    """Write ``messages`` (in the given order) to ``path``; return placeholder -> address.

    ``mapping`` seeds the placeholder map (e.g. from an earlier run); ``counts`` receives
    ``packets`` and ``stream_written_as_udp``."""
    counts = Counter() if counts is None else counts
    used = {e.ip for m in messages if m.origin for e in (m.origin.src, m.origin.dst) if e}
    mapper = _Mapper(mapping, used)
    seqs: dict[tuple[Endpoint, Endpoint], int] = {}
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", _PCAP_NS_MAGIC, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET))
        for msg in messages:
            src, dst = _endpoints(msg, mapper)
            transport = msg.origin.transport if msg.origin else Transport.UDP
            if transport is not Transport.UDP and not _framable(msg.raw):
                transport = Transport.UDP
                counts["stream_written_as_udp"] += 1
            eth = _ETH_V6 if ":" in src.ip or ":" in dst.ip else _ETH_V4
            for packet in _packets(src, dst, transport, msg.raw, seqs):
                f.write(_record(msg.ts, eth + packet))
                counts["packets"] += 1
    return mapper.mapping


def _packets(
    src: Endpoint,
    dst: Endpoint,
    transport: Transport,
    raw: bytes,
    seqs: dict[tuple[Endpoint, Endpoint], int],
) -> Iterator[bytes]:
    if transport is Transport.UDP:
        yield _udp(src, dst, raw[:65_000])
        return
    for start in range(0, max(len(raw), 1), _MAX_SEGMENT):
        chunk = raw[start : start + _MAX_SEGMENT]
        seq = seqs.get((src, dst), 1)
        ack = seqs.get((dst, src), 1)
        yield _tcp(src, dst, seq, ack, chunk)
        seqs[(src, dst)] = (seq + len(chunk)) & 0xFFFFFFFF
