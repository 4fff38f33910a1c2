"""HEP (Homer Encapsulation Protocol) v1, v2 and v3 (EEP) decapsulation: sans-IO.

How this works: a capture agent (Kamailio ``siptrace``, OpenSIPS ``proto_hep``, FreeSWITCH,
heplify, ...) copies each SIP message it sees into a HEP packet, with the original 5-tuple
and time, and sends it over UDP or TCP (conventionally to port 9060). :func:`decode_hep`
turns one such packet into a :class:`HepPacket`: the inner source and destination
:class:`~sipflow.ingest.types.Endpoint`, the IP protocol, the capture time in integer
nanoseconds, the HEP protocol type (1 = SIP) and the captured payload. Malformed input
raises :class:`~sipflow.errors.ParseError` naming the field and byte offset; callers turn
it into a Finding. Nothing here opens a socket or reads a clock.

Layouts (all integers network byte order unless said otherwise):

* HEPv3 / EEP (HEP3 spec, sipcapture): ``"HEP3"``, total length (uint16), then chunks of
  ``vendor-id (uint16) | type-id (uint16) | length (uint16, header included) | value``.
  Generic chunks (vendor 0) are the types of :class:`Chunk`; chunks of other vendors are
  kept, undecoded, in ``HepPacket.vendor_chunks``. Over TCP the total length frames the
  stream (:class:`HepStream`).
* HEPv1/v2: ``version (1|2) | header length | family | IP protocol | sport | dport |
  src addr | dst addr``; header length is 16 (IPv4) or 40 (IPv6). v2 then has a time
  header: seconds and microseconds (uint32, little-endian as the agents write them from
  host memory on x86) and a uint16 capture id padded to 12 bytes.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sipflow.errors import ParseError
from sipflow.findings import Finding, Ref, Severity
from sipflow.ingest import classify
from sipflow.ingest.types import Datagram, Endpoint, Transport

__all__ = [
    "AF_INET",
    "AF_INET6",
    "Chunk",
    "HepDecapsulator",
    "HepPacket",
    "HepProto",
    "HepStream",
    "decode_hep",
    "encode_hep2",
    "encode_hep3",
    "hep_candidates",
    "looks_like_hep",
]

MAGIC = b"HEP3"
AF_INET = 2
AF_INET6 = 10
HEP2_TIME_LEN = 12  # uint32 sec, uint32 usec, uint16 capture id, 2 bytes padding
MAX_INFLATED = 1 << 20  # a compressed payload may not inflate past 1 MiB
NS = 1_000_000_000

# IP protocol numbers (IANA) -> transport; 22 is what Kamailio's siptrace puts there
# for TLS (it has no IP protocol of its own).
_TRANSPORTS = {17: Transport.UDP, 6: Transport.TCP, 132: Transport.SCTP, 22: Transport.TLS}


class Chunk(enum.IntEnum):
    """Generic chunk types (vendor 0) of the HEP3 specification."""

    IP_FAMILY = 1  # uint8
    IP_PROTO = 2  # uint8
    IPV4_SRC = 3  # inet4-addr
    IPV4_DST = 4
    IPV6_SRC = 5  # inet6-addr
    IPV6_DST = 6
    SRC_PORT = 7  # uint16
    DST_PORT = 8
    TS_SEC = 9  # uint32, seconds since the epoch
    TS_USEC = 10  # uint32, microseconds added to TS_SEC
    PROTO_TYPE = 11  # uint8, HepProto
    CAPTURE_ID = 12  # uint32
    KEEPALIVE = 13  # uint16, seconds
    AUTH_KEY = 14  # octets
    PAYLOAD = 15  # octets
    COMPRESSED_PAYLOAD = 16  # octets, zlib/gzip
    CORRELATION_ID = 17  # octets
    VLAN_ID = 18  # uint16
    GROUP_ID = 19  # octets
    SRC_MAC = 20  # uint64
    DST_MAC = 21  # uint64
    ETH_TYPE = 22  # uint16
    TCP_FLAGS = 23  # uint8
    IP_TOS = 24  # uint8
    MOS = 32  # uint16
    R_FACTOR = 33  # uint16
    GEO_LOCATION = 34  # octets
    JITTER = 35  # uint32
    TRANSACTION_TYPE = 36  # octets
    PAYLOAD_JSON_KEYS = 37  # octets
    TAGS_VALUES = 38  # octets
    TAG_TYPE = 39  # octets


# Fixed value sizes of the integer and address chunks; the others are octet strings.
_SIZES: dict[int, int] = {
    Chunk.IP_FAMILY: 1,
    Chunk.IP_PROTO: 1,
    Chunk.IPV4_SRC: 4,
    Chunk.IPV4_DST: 4,
    Chunk.IPV6_SRC: 16,
    Chunk.IPV6_DST: 16,
    Chunk.SRC_PORT: 2,
    Chunk.DST_PORT: 2,
    Chunk.TS_SEC: 4,
    Chunk.TS_USEC: 4,
    Chunk.PROTO_TYPE: 1,
    Chunk.CAPTURE_ID: 4,
    Chunk.KEEPALIVE: 2,
    Chunk.VLAN_ID: 2,
    Chunk.SRC_MAC: 8,
    Chunk.DST_MAC: 8,
    Chunk.ETH_TYPE: 2,
    Chunk.TCP_FLAGS: 1,
    Chunk.IP_TOS: 1,
    Chunk.MOS: 2,
    Chunk.R_FACTOR: 2,
    Chunk.JITTER: 4,
}
_ADDRESS_CHUNKS = frozenset((Chunk.IPV4_SRC, Chunk.IPV4_DST, Chunk.IPV6_SRC, Chunk.IPV6_DST))


class HepProto(enum.IntEnum):
    """HEP protocol types (chunk 11): what the payload is."""

    RESERVED = 0
    SIP = 1
    XMPP = 2
    SDP = 3
    RTP = 4
    RTCP_JSON = 5
    MGCP = 6
    MEGACO = 7
    M2UA = 8
    M3UA = 9
    IAX = 10
    H3222 = 11
    H321 = 12
    M2PA = 13
    MOS_FULL = 34
    MOS_SHORT = 35
    SIP_JSON = 50
    DNS_JSON = 53
    M3UA_JSON = 54
    RTSP = 55
    DIAMETER_JSON = 56
    GSM_MAP_JSON = 57
    RTCP_PION = 58
    CDR = 60
    LOG = 100


ChunkValue = int | bytes | str


@dataclass(frozen=True, slots=True)
class HepPacket:
    """One decapsulated HEP packet.

    ``ts`` is the capture time (ns) the agent put in, or None when it sent none;
    ``proto_type`` a :class:`HepProto` value (kept as int: unknown types are legal);
    ``chunks`` every generic chunk as (type, value) in wire order (ints for integer
    chunks, text for addresses, bytes for octet strings); ``vendor_chunks`` the chunks
    of other vendors as (vendor, type, bytes); ``trailing`` bytes after the packet."""

    version: int
    family: int
    ip_proto: int
    src: Endpoint
    dst: Endpoint
    ts: int | None
    proto_type: int
    capture_id: int | None
    payload: bytes
    chunks: tuple[tuple[int, ChunkValue], ...] = ()
    vendor_chunks: tuple[tuple[int, int, bytes], ...] = ()
    trailing: int = 0

    @property
    def transport(self) -> Transport | None:
        """The transport the inner message travelled on (None: an IP protocol we do not map)."""
        return _TRANSPORTS.get(self.ip_proto)

    @property
    def is_sip(self) -> bool:
        return self.proto_type == HepProto.SIP

    def chunk(self, kind: int) -> ChunkValue | None:
        """The value of the first generic chunk of this type, or None."""
        return next((v for t, v in self.chunks if t == kind), None)


# ----------------------------------------------------------------------------- detection


def looks_like_hep(data: bytes) -> bool:
    """The bytes start like a HEP packet: ``HEP3``, or a plausible v1/v2 header."""
    if data[:4] == MAGIC:
        return True
    return (
        len(data) >= 16
        and data[0] in (1, 2)
        and (data[1], data[2]) in ((16, AF_INET), (40, AF_INET6))
        and data[3] in _TRANSPORTS
    )


def hep_candidates(
    buf: npt.NDArray[np.uint8], offset: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Vectorised :func:`looks_like_hep` over payloads ``buf[offset:offset+length]``."""
    top = len(buf) - 1
    out = np.zeros(len(offset), np.bool_)
    b0 = buf[np.minimum(offset, top)]
    sel = np.flatnonzero((b0 == 0x48) | (b0 == 1) | (b0 == 2))  # "H", v1, v2: RTP stops here
    if len(sel) == 0:
        return out
    off, size = offset[sel], length[sel]
    b = [buf[np.minimum(off + k, top)] for k in range(4)]
    v3 = (b[0] == 0x48) & (b[1] == 0x45) & (b[2] == 0x50) & (b[3] == 0x33)  # "HEP3"
    v2 = ((b[0] == 1) | (b[0] == 2)) & (
        ((b[1] == 16) & (b[2] == AF_INET)) | ((b[1] == 40) & (b[2] == AF_INET6))
    )
    v2 &= np.isin(b[3], list(_TRANSPORTS)) & (size >= 16)
    out[sel] = (size >= 6) & (v3 | v2)
    return out


# ----------------------------------------------------------------------------- decoding


def decode_hep(data: bytes) -> HepPacket:
    """Decode one HEP packet (any version). Raises ParseError on malformed input."""
    if data[:4] == MAGIC:
        return _decode_v3(data)
    if data[:1] in (b"\x01", b"\x02"):
        return _decode_v2(data)
    raise ParseError("hep", "not a HEP packet (no HEP3 magic, version not 1 or 2)", 0)


def _decode_v3(data: bytes) -> HepPacket:
    if len(data) < 6:
        raise ParseError("hep3.length", f"{len(data)} bytes, the header needs 6", len(data))
    total = int.from_bytes(data[4:6], "big")
    if total < 6:
        raise ParseError("hep3.length", f"total length {total} is under the 6-byte header", 4)
    if total > len(data):
        raise ParseError("hep3.length", f"total length {total} but {len(data)} bytes", len(data))
    generic, vendor = _chunks(data, total)
    return _assemble(3, generic, tuple(vendor), len(data) - total)


def _chunks(
    data: bytes, total: int
) -> tuple[list[tuple[int, ChunkValue]], list[tuple[int, int, bytes]]]:
    generic: list[tuple[int, ChunkValue]] = []
    vendor: list[tuple[int, int, bytes]] = []
    off = 6
    while off < total:
        if total - off < 6:
            raise ParseError("hep3.chunk", f"{total - off} bytes left, a chunk header needs 6", off)
        vid, tid, clen = struct.unpack_from("!HHH", data, off)
        if clen < 6 or off + clen > total:
            raise ParseError("hep3.chunk", f"chunk {vid}/{tid} length {clen} does not fit", off)
        value = data[off + 6 : off + clen]
        if vid != 0:
            vendor.append((vid, tid, value))
        else:
            generic.append((tid, _chunk_value(tid, value, off)))
        off += clen
    return generic, vendor


def _chunk_value(tid: int, value: bytes, off: int) -> ChunkValue:
    size = _SIZES.get(tid)
    if size is None:
        return value  # octet string (or an unknown generic type, kept as bytes)
    if len(value) != size:
        name = Chunk(tid).name.lower()
        raise ParseError(f"hep3.{name}", f"{len(value)} value bytes, expected {size}", off)
    if tid in _ADDRESS_CHUNKS:
        return str(ipaddress.ip_address(value))
    return int.from_bytes(value, "big")


def _assemble(
    version: int,
    generic: list[tuple[int, ChunkValue]],
    vendor: tuple[tuple[int, int, bytes], ...],
    trailing: int,
) -> HepPacket:
    got = dict(reversed(generic))  # first occurrence wins
    family = _need_int(got, Chunk.IP_FAMILY)
    if family not in (AF_INET, AF_INET6):
        raise ParseError("hep3.ip_family", f"family {family} is neither 2 (IPv4) nor 10 (IPv6)")
    src_t, dst_t = (
        (Chunk.IPV4_SRC, Chunk.IPV4_DST) if family == AF_INET else (Chunk.IPV6_SRC, Chunk.IPV6_DST)
    )
    src = Endpoint(_need_str(got, src_t), _need_int(got, Chunk.SRC_PORT))
    dst = Endpoint(_need_str(got, dst_t), _need_int(got, Chunk.DST_PORT))
    sec, usec = got.get(Chunk.TS_SEC), got.get(Chunk.TS_USEC, 0)
    ts = sec * NS + int(usec) * 1000 if isinstance(sec, int) and isinstance(usec, int) else None
    cid = got.get(Chunk.CAPTURE_ID)
    return HepPacket(
        version,
        family,
        _need_int(got, Chunk.IP_PROTO),
        src,
        dst,
        ts,
        int(got.get(Chunk.PROTO_TYPE, HepProto.SIP)),
        cid if isinstance(cid, int) else None,
        _payload(got),
        tuple(generic),
        vendor,
        trailing,
    )


def _need_int(got: dict[int, ChunkValue], kind: Chunk) -> int:
    value = got.get(kind)
    if not isinstance(value, int):
        raise ParseError(f"hep3.{kind.name.lower()}", "mandatory chunk missing")
    return value


def _need_str(got: dict[int, ChunkValue], kind: Chunk) -> str:
    value = got.get(kind)
    if not isinstance(value, str):
        raise ParseError(f"hep3.{kind.name.lower()}", "mandatory chunk missing")
    return value


def _payload(got: dict[int, ChunkValue]) -> bytes:
    plain = got.get(Chunk.PAYLOAD)
    if isinstance(plain, bytes):
        return plain
    packed = got.get(Chunk.COMPRESSED_PAYLOAD)
    if isinstance(packed, bytes):
        return _inflate(packed)
    raise ParseError("hep3.payload", "no payload chunk (15) nor compressed payload chunk (16)")


def _inflate(packed: bytes) -> bytes:
    """zlib or gzip (window bits 47 = auto-detect), bounded to MAX_INFLATED bytes."""
    d = zlib.decompressobj(47)
    try:
        out = d.decompress(packed, MAX_INFLATED)
    except zlib.error as exc:
        raise ParseError("hep3.compressed_payload", f"does not inflate: {exc}") from None
    if d.unconsumed_tail:
        raise ParseError("hep3.compressed_payload", f"inflates past {MAX_INFLATED} bytes")
    if not d.eof:
        raise ParseError("hep3.compressed_payload", "compressed stream is truncated")
    return out


def _decode_v2(data: bytes) -> HepPacket:
    version = data[0]
    if len(data) < 8:
        raise ParseError(f"hep{version}.header", f"{len(data)} bytes, the header needs 8", 0)
    hlen, family, proto = data[1], data[2], data[3]
    alen = {AF_INET: 4, AF_INET6: 16}.get(family)
    if alen is None:
        raise ParseError(f"hep{version}.family", f"family {family} is neither 2 nor 10", 2)
    if hlen != 8 + 2 * alen:
        raise ParseError(f"hep{version}.header", f"header length {hlen} for family {family}", 1)
    end = hlen + (HEP2_TIME_LEN if version == 2 else 0)
    if len(data) < end:
        raise ParseError(f"hep{version}.header", f"{len(data)} bytes, headers need {end}", 0)
    sport, dport = struct.unpack_from("!HH", data, 4)
    src = Endpoint(str(ipaddress.ip_address(data[8 : 8 + alen])), sport)
    dst = Endpoint(str(ipaddress.ip_address(data[8 + alen : hlen])), dport)
    ts, cid = None, None
    if version == 2:
        sec, usec, cid = struct.unpack_from("<IIH", data, hlen)
        ts = sec * NS + usec * 1000
    return HepPacket(version, family, proto, src, dst, ts, HepProto.SIP, cid, data[end:])


# ----------------------------------------------------------------------------- to Datagrams


class HepDecapsulator:
    """HEP packets in, the inner SIP as :class:`Datagram` values out (sans-IO).

    The Datagram has the inner 5-tuple and transport and the agent's capture time (the
    outer time when the agent sent none); ``frames`` are those of the HEP packet. Each
    HEP payload is one whole message, so stream transports get one pseudo stream per
    inner direction, numbered -2, -3, ... (never a TcpReassembler stream number).
    What is not SIP is counted in ``skipped`` by reason; malformed HEP also becomes a
    ``ingest.hep_malformed`` Finding. A pseudo stream not used for :data:`STREAM_IDLE_NS`
    is forgotten (the same pair later gets a new number, as a new TCP connection would),
    so memory follows the peers still talking, not every pair ever seen."""

    def __init__(self, source: int, skipped: dict[str, int], findings: list[Finding]) -> None:
        self.source = source
        self.skipped = skipped
        self.findings = findings
        # inner direction -> (pseudo stream number, time last used); least recent first
        self._streams: dict[tuple[Endpoint, Endpoint], tuple[int, int]] = {}
        self._next = -2

    def datagram(self, data: bytes, frame: int, ts: int) -> Datagram | None:
        try:
            pkt = decode_hep(data)
        except ParseError as exc:
            self._count("hep_malformed")
            ref = (Ref(self.source, frame),)
            self.findings.append(
                Finding("ingest.hep_malformed", Severity.WARNING, f"HEP packet: {exc}", None, ref)
            )
            return None
        return self.inner(pkt, frame, ts)

    def inner(self, pkt: HepPacket, frame: int, ts: int) -> Datagram | None:
        """The Datagram of an already decoded packet, or None (counted) when not SIP."""
        if not pkt.is_sip:
            self._count("hep_non_sip")
            return None
        kind = classify.classify_payload(pkt.payload)
        if kind is not classify.Kind.SIP and kind is not classify.Kind.MALFORMED_SIP:
            self._count("hep_non_sip" if kind is classify.Kind.OTHER else "hep_keepalive")
            return None
        transport = pkt.transport or Transport.UDP
        if pkt.transport is None:
            self._count("hep_unknown_ip_proto_as_udp")
        when = pkt.ts if pkt.ts is not None else ts
        stream = -1 if transport is Transport.UDP else self._stream(pkt.src, pkt.dst, when)
        return Datagram(
            pkt.src, pkt.dst, transport, pkt.payload, (frame,), when, self.source, stream
        )

    def _stream(self, src: Endpoint, dst: Endpoint, when: int) -> int:
        """The pseudo stream number of an inner direction (-2, -3, ...; never reused)."""
        horizon = when - STREAM_IDLE_NS
        entry = self._streams.pop((src, dst), None)
        if entry is None or entry[1] < horizon:
            entry, self._next = (self._next, when), self._next - 1
        self._streams[(src, dst)] = (entry[0], max(entry[1], when))
        while True:  # agents' clocks differ: a pair is dropped only once well idle
            first = next(iter(self._streams))
            if self._streams[first][1] >= horizon:
                return entry[0]
            del self._streams[first]

    @property
    def streams(self) -> int:
        """How many inner directions are remembered now."""
        return len(self._streams)

    def _count(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


STREAM_IDLE_NS = 600_000_000_000
"""An inner TCP/TLS direction of HEP not seen for 10 minutes is forgotten (the TCP
reassembler's idle timeout, :class:`~sipflow.ingest.reassembly.TcpReassembler`)."""


# ----------------------------------------------------------------------------- TCP framing


class HepStream:
    """HEP3 over a byte stream (TCP): bytes in, whole packets out, framed by the total
    length. Bytes that do not start a packet are skipped up to the next ``HEP3`` and
    counted in ``skipped_bytes``."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= 6:
            if self._buf[:4] != MAGIC:
                self._resync()
                continue
            total = int.from_bytes(self._buf[4:6], "big")
            if total < 6:
                self._buf[:4] = b"\0\0\0\0"  # not a packet: look for the next magic
                continue
            if len(self._buf) < total:
                break
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]
        return out

    def _resync(self) -> None:
        at = self._buf.find(MAGIC, 1)
        cut = at if at >= 0 else max(len(self._buf) - 3, 0)
        self.skipped_bytes += cut
        del self._buf[:cut]

    @property
    def pending(self) -> int:
        """Bytes held waiting for the rest of a packet."""
        return len(self._buf)


# ----------------------------------------------------------------------------- encoding


def _chunk(tid: int, value: bytes, vendor: int = 0) -> bytes:
    return struct.pack("!HHH", vendor, tid, 6 + len(value)) + value


def encode_hep3(
    src: Endpoint,
    dst: Endpoint,
    payload: bytes,
    ts: int,
    *,
    ip_proto: int = 17,
    proto_type: int = HepProto.SIP,
    capture_id: int = 0,
    extra: tuple[tuple[int, bytes], ...] = (),
    compress: bool = False,
) -> bytes:
    """A HEP3 packet carrying ``payload`` seen from ``src`` to ``dst`` at ``ts`` (ns).
    ``extra`` adds generic chunks (type, raw value) after the standard ones."""
    v6 = ":" in src.ip
    fam = AF_INET6 if v6 else AF_INET
    s_t, d_t = (Chunk.IPV6_SRC, Chunk.IPV6_DST) if v6 else (Chunk.IPV4_SRC, Chunk.IPV4_DST)
    sec, rest = divmod(ts, NS)
    body = b"".join(
        (
            _chunk(Chunk.IP_FAMILY, bytes([fam])),
            _chunk(Chunk.IP_PROTO, bytes([ip_proto])),
            _chunk(s_t, ipaddress.ip_address(src.ip).packed),
            _chunk(d_t, ipaddress.ip_address(dst.ip).packed),
            _chunk(Chunk.SRC_PORT, struct.pack("!H", src.port)),
            _chunk(Chunk.DST_PORT, struct.pack("!H", dst.port)),
            _chunk(Chunk.TS_SEC, struct.pack("!I", sec)),
            _chunk(Chunk.TS_USEC, struct.pack("!I", rest // 1000)),
            _chunk(Chunk.PROTO_TYPE, bytes([proto_type])),
            _chunk(Chunk.CAPTURE_ID, struct.pack("!I", capture_id)),
            *(_chunk(t, v) for t, v in extra),
            _chunk(Chunk.COMPRESSED_PAYLOAD, zlib.compress(payload))
            if compress
            else _chunk(Chunk.PAYLOAD, payload),
        )
    )
    return MAGIC + struct.pack("!H", 6 + len(body)) + body


def encode_hep2(
    src: Endpoint, dst: Endpoint, payload: bytes, ts: int, *, ip_proto: int = 17, version: int = 2
) -> bytes:
    """A HEPv2 (or v1) packet, time header little-endian as the agents write it."""
    v6 = ":" in src.ip
    alen = 16 if v6 else 4
    head = struct.pack(
        "!BBBBHH", version, 8 + 2 * alen, AF_INET6 if v6 else AF_INET, ip_proto, src.port, dst.port
    )
    head += ipaddress.ip_address(src.ip).packed + ipaddress.ip_address(dst.ip).packed
    if version == 2:
        sec, rest = divmod(ts, NS)
        head += struct.pack("<IIHxx", sec, rest // 1000, 0)
    return head + payload
